/* whittle's additions to gotch's libtch C API, compiled into the same
 * libtch.so. Only the C ABI below is visible to Go; it is identical whatever
 * libtorch the library was built against, so a Go binary built against the
 * CPU library here runs against a CUDA build of it elsewhere. */
#ifndef WHITTLE_EXT_H
#define WHITTLE_EXT_H
#include <stdint.h>

#ifdef __cplusplus
#include <torch/torch.h>
extern "C" {
typedef torch::Tensor *wht_tensor;
#else
typedef void *wht_tensor;
#endif

/* wht_last_error returns and clears this thread's error message (malloc'd,
 * the caller frees it), or NULL. gotch's own functions report through
 * get_and_reset_last_err. */
char *wht_last_error(void);

/* wht_torch_version is the libtorch version compiled against, e.g. "2.11.0". */
const char *wht_torch_version(void);

/* wht_has_fused_adamw reports whether at::_fused_adamw_ was compiled in. */
int wht_has_fused_adamw(void);

/* wht_adamw_step updates n parameters in place exactly as torch.optim.AdamW
 * does at step `step` (1-based): gradients are first multiplied by
 * grad_scale (the clipping factor), weight decay wd[i] is decoupled. With
 * fused != 0 and at::_fused_adamw_ available (libtorch >= 2.1, CUDA
 * tensors) it runs the fused multi-tensor kernel, else per-tensor ops. */
void wht_adamw_step(wht_tensor *params, wht_tensor *grads, wht_tensor *exp_avg,
                    wht_tensor *exp_avg_sq, const double *wd, int n,
                    int64_t step, double lr, double beta1, double beta2,
                    double eps, double grad_scale, int fused);

/* wht_global_norm returns sqrt(Σᵢ ‖tᵢ‖²) as a new float32 0-dim tensor
 * (undefined tensors are skipped). */
wht_tensor wht_global_norm(wht_tensor *ts, int n);

/* wht_grad_accumulate adds src into the .grad of param (allocating it when
 * undefined), for gradients computed outside autograd. */
void wht_grad_accumulate(wht_tensor param, wht_tensor src);

/* wht_grad returns the .grad of t (an undefined tensor when it has none). */
wht_tensor wht_grad(wht_tensor t);

/* wht_zero_grad drops the .grad of n tensors (set_to_none). */
void wht_zero_grad(wht_tensor *ts, int n);

/* wht_set_num_threads / wht_get_num_threads: libtorch's intra-op threads. */
void wht_set_num_threads(int n);
int wht_get_num_threads(void);

/* wht_cuda_memory reports the CUDA caching allocator's peak bytes on device
 * (0 on CPU builds) and resets the peak. */
int64_t wht_cuda_max_memory(int device);

#ifdef __cplusplus
}
#endif
#endif
