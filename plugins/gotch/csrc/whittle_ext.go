//go:build ignore

// This file is copied into the patched copy of gotch's libtch package by
// scripts/prepare.sh (which drops the build constraint above); it is not
// compiled where it lies.

package libtch

// #include <stdlib.h>
// #include "whittle_ext.h"
// void at_manual_seed(int64_t);
import "C"

import "unsafe"

// WhtLastError returns and clears the calling thread's error from a wht_
// function ("" when none).
func WhtLastError() string {
	p := C.wht_last_error()
	if p == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(p))
	return C.GoString(p)
}

// WhtTorchVersion is the libtorch version libtch.so was built against.
func WhtTorchVersion() string { return C.GoString(C.wht_torch_version()) }

// WhtHasFusedAdamW reports whether at::_fused_adamw_ was compiled in.
func WhtHasFusedAdamW() bool { return C.wht_has_fused_adamw() != 0 }

func cArray(ts []Ctensor) (*C.wht_tensor, func()) {
	if len(ts) == 0 {
		return nil, func() {}
	}
	n := C.size_t(len(ts)) * C.size_t(unsafe.Sizeof(C.wht_tensor(nil)))
	p := (*C.wht_tensor)(C.malloc(n))
	s := unsafe.Slice(p, len(ts))
	for i, t := range ts {
		s[i] = C.wht_tensor(unsafe.Pointer(t))
	}
	return p, func() { C.free(unsafe.Pointer(p)) }
}

// WhtAdamWStep runs one AdamW step over parameters, gradients and both
// moments (equal-length lists), wd giving each tensor's weight decay.
func WhtAdamWStep(params, grads, m, v []Ctensor, wd []float64, step int64, lr, beta1, beta2, eps, gradScale float64, fused bool) {
	pp, f1 := cArray(params)
	defer f1()
	gp, f2 := cArray(grads)
	defer f2()
	mp, f3 := cArray(m)
	defer f3()
	vp, f4 := cArray(v)
	defer f4()
	var wdp *C.double
	if len(wd) > 0 {
		w := (*C.double)(C.malloc(C.size_t(len(wd)) * 8))
		defer C.free(unsafe.Pointer(w))
		copy(unsafe.Slice((*float64)(unsafe.Pointer(w)), len(wd)), wd)
		wdp = w
	}
	f := C.int(0)
	if fused {
		f = 1
	}
	C.wht_adamw_step(pp, gp, mp, vp, wdp, C.int(len(params)), C.int64_t(step), C.double(lr), C.double(beta1), C.double(beta2), C.double(eps), C.double(gradScale), f)
}

// WhtGlobalNorm returns a new 0-dim tensor holding sqrt(Σ‖tᵢ‖²).
func WhtGlobalNorm(ts []Ctensor) Ctensor {
	p, free := cArray(ts)
	defer free()
	return Ctensor(unsafe.Pointer(C.wht_global_norm(p, C.int(len(ts)))))
}

// WhtGradAccumulate adds src into param's gradient.
func WhtGradAccumulate(param, src Ctensor) {
	C.wht_grad_accumulate(C.wht_tensor(unsafe.Pointer(param)), C.wht_tensor(unsafe.Pointer(src)))
}

// WhtGrad returns a new handle on t's gradient (undefined when none).
func WhtGrad(t Ctensor) Ctensor {
	return Ctensor(unsafe.Pointer(C.wht_grad(C.wht_tensor(unsafe.Pointer(t)))))
}

// WhtZeroGrad drops the gradients of ts.
func WhtZeroGrad(ts []Ctensor) {
	p, free := cArray(ts)
	defer free()
	C.wht_zero_grad(p, C.int(len(ts)))
}

// WhtCudaMaxMemory returns and resets the peak bytes allocated on a CUDA
// device (0 on a CPU build).
func WhtCudaMaxMemory(device int) int64 {
	return int64(C.wht_cuda_max_memory(C.int(device)))
}

// WhtSetNumThreads sets libtorch's intra-op thread count.
func WhtSetNumThreads(n int) { C.wht_set_num_threads(C.int(n)) }

// WhtGetNumThreads is libtorch's intra-op thread count.
func WhtGetNumThreads() int { return int(C.wht_get_num_threads()) }

// WhtManualSeed seeds libtorch's generators (CPU and CUDA).
func WhtManualSeed(seed int64) { C.at_manual_seed(C.int64_t(seed)) }
