package torch

import (
	"fmt"
	"math"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
)

// Data transfer.

// FromFloat32 copies data (of the given shape) into a new float32 tensor on
// the CPU.
func (s *Scope) FromFloat32(data []float32, shape ...int64) Tensor {
	return s.fromData("FromFloat32", unsafe.Pointer(unsafe.SliceData(data)), len(data), shape, Float32, data)
}

// FromInt64 copies data into a new int64 tensor on the CPU.
func (s *Scope) FromInt64(data []int64, shape ...int64) Tensor {
	return s.fromData("FromInt64", unsafe.Pointer(unsafe.SliceData(data)), len(data), shape, Int64, data)
}

// FromBytes copies raw little-endian elements of dtype into a new CPU tensor.
func (s *Scope) FromBytes(data []byte, dtype DType, shape ...int64) Tensor {
	return s.fromData("FromBytes", unsafe.Pointer(unsafe.SliceData(data)), len(data)/dtype.Size(), shape, dtype, data)
}

func (s *Scope) fromData(op string, p unsafe.Pointer, n int, shape []int64, dt DType, keep any) Tensor {
	if s.err != nil {
		return Tensor{}
	}
	numel := int64(1)
	for _, d := range shape {
		numel *= d
	}
	if numel != int64(n) {
		s.err = fmt.Errorf("torch %s: %d elements for shape %v", op, n, shape)
		return Tensor{}
	}
	if n == 0 {
		return s.Zeros(shape, dt, CPU)
	}
	dims := shape
	if len(dims) == 0 {
		dims = []int64{1} // at_tensor_of_data dereferences dims[0]
	}
	t := s.run(op, func(out *lib.Ctensor) {
		*out = lib.AtTensorOfData(p, dims, uint(len(shape)), uint(dt.Size()), int(dt))
	})
	keepAlive(keep)
	return t
}

// Float32s copies t's elements (converted to float32, moved to the host) into
// a new slice.
func (s *Scope) Float32s(t Tensor) []float32 {
	if !s.ok(t) {
		return nil
	}
	c := s.ToDType(t, Float32) // at_copy_data makes it contiguous
	n := c.numel(s)
	if s.err != nil {
		return nil
	}
	out := make([]float32, n)
	if n > 0 {
		s.check("Float32s", func() { lib.AtCopyData(c.c, unsafe.Pointer(&out[0]), uint(n), 4) })
	}
	return out
}

// Int64s copies t's elements (converted to int64) into a new slice.
func (s *Scope) Int64s(t Tensor) []int64 {
	if !s.ok(t) {
		return nil
	}
	c := s.ToDType(t, Int64)
	n := c.numel(s)
	if s.err != nil {
		return nil
	}
	out := make([]int64, n)
	if n > 0 {
		s.check("Int64s", func() { lib.AtCopyData(c.c, unsafe.Pointer(&out[0]), uint(n), 8) })
	}
	return out
}

// Bytes copies t's raw elements (contiguous, on the host) into a new slice.
func (s *Scope) Bytes(t Tensor) []byte {
	if !s.ok(t) {
		return nil
	}
	c := t
	n := c.numel(s)
	es := t.DType().Size()
	out := make([]byte, int(n)*es)
	if n > 0 && s.err == nil {
		s.check("Bytes", func() { lib.AtCopyData(c.c, unsafe.Pointer(&out[0]), uint(n), uint(es)) })
	}
	return out
}

// Item is the value of a one-element tensor.
func (s *Scope) Item(t Tensor) float64 {
	v := s.Float32s(t)
	if s.err != nil {
		return math.NaN()
	}
	if len(v) != 1 {
		s.err = fmt.Errorf("torch Item: tensor of %d elements", len(v))
		return math.NaN()
	}
	return float64(v[0])
}

// Item64 is the value of a one-element tensor in float64 (no float32 rounding).
func (s *Scope) Item64(t Tensor) float64 {
	if !s.ok(t) {
		return math.NaN()
	}
	c := s.ToDType(t, Float64)
	var v [1]float64
	s.check("Item64", func() { lib.AtCopyData(c.c, unsafe.Pointer(&v[0]), 1, 8) })
	return v[0]
}

func (t Tensor) numel(s *Scope) int64 {
	if !s.ok(t) {
		return 0
	}
	return t.Numel()
}

// CopyInto copies src's values into dst in place (shapes must match;
// dtype and device are converted).
func (s *Scope) CopyInto(dst, src Tensor) {
	if s.ok(dst, src) {
		s.check("CopyInto", func() { lib.AtCopy_(dst.c, src.c) })
	}
}

// Creation.

// Zeros is a new tensor of zeros.
func (s *Scope) Zeros(shape []int64, dt DType, dev Device) Tensor {
	dims := nonEmpty(shape)
	return s.run("Zeros", func(o *lib.Ctensor) { lib.AtgZeros(o, dims, len(shape), int32(dt), int32(dev)) })
}

// Full is a new tensor filled with v.
func (s *Scope) Full(shape []int64, v float64, dt DType, dev Device) Tensor {
	dims := nonEmpty(shape)
	var t Tensor
	withScalar(v, func(sc lib.Cscalar) {
		t = s.run("Full", func(o *lib.Ctensor) { lib.AtgFull(o, dims, len(shape), sc, int32(dt), int32(dev)) })
	})
	return t
}

// Arange is [0, n) as int64.
func (s *Scope) Arange(n int64, dt DType, dev Device) Tensor {
	sc := lib.AtsInt(n)
	defer lib.AtsFree(sc)
	return s.run("Arange", func(o *lib.Ctensor) { lib.AtgArange(o, sc, int32(dt), int32(dev)) })
}

func nonEmpty(shape []int64) []int64 {
	if len(shape) == 0 {
		return []int64{0} // the wrappers read the first element even for rank 0
	}
	return shape
}

// ZerosLike is zeros of t's shape, dtype and device.
func (s *Scope) ZerosLike(t Tensor) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("ZerosLike", func(o *lib.Ctensor) { lib.AtgZerosLike(o, t.c) })
}

// Conversion and autograd.

// To moves t to dev (t itself when already there).
func (s *Scope) To(t Tensor, dev Device) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("To", func(o *lib.Ctensor) { lib.AtgTo(o, t.c, int32(dev)) })
}

// ToDType converts t (t itself when already of dt).
func (s *Scope) ToDType(t Tensor, dt DType) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("ToDType", func(o *lib.Ctensor) { lib.AtgToDtype(o, t.c, int32(dt), 0, 0) })
}

// Copy is a new tensor with t's values converted to dt on dev (always a copy).
func (s *Scope) Copy(t Tensor, dev Device, dt DType) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Copy", func(o *lib.Ctensor) { lib.AtgToDevice(o, t.c, int32(dev), int32(dt), 0, 1) })
}

// Detach is t cut from the autograd graph (sharing storage).
func (s *Scope) Detach(t Tensor) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Detach", func(o *lib.Ctensor) { lib.AtgDetach(o, t.c) })
}

// SetRequiresGrad makes autograd track t (a leaf).
func (s *Scope) SetRequiresGrad(t Tensor, on bool) {
	if s.ok(t) {
		s.run("RequiresGrad_", func(o *lib.Ctensor) { lib.AtgRequiresGrad_(o, t.c, b2i(on)) })
	}
}

// Grad is t's accumulated gradient (undefined when it has none).
func (s *Scope) Grad(t Tensor) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	g := s.run("Grad", func(o *lib.Ctensor) { *o = lib.WhtGrad(t.c) })
	if g.c != nil && !lib.AtDefined(g.c) {
		return Tensor{}
	}
	return g
}

// Backward runs autograd from a scalar t.
func (s *Scope) Backward(t Tensor) {
	if s.ok(t) {
		s.check("Backward", func() { lib.AtBackward(t.c, 0, 0) })
	}
}

// AccumulateGrad adds g into param's gradient.
func (s *Scope) AccumulateGrad(param, g Tensor) {
	if s.ok(param, g) {
		s.check("AccumulateGrad", func() { lib.WhtGradAccumulate(param.c, g.c) })
	}
}

// ZeroGrad drops the gradients of ts.
func (s *Scope) ZeroGrad(ts []Tensor) {
	if s.err == nil && len(ts) > 0 {
		cs := handles(ts)
		s.check("ZeroGrad", func() { lib.WhtZeroGrad(cs) })
	}
}

// GlobalNorm is sqrt(Σ‖tᵢ‖²) as a float32 scalar tensor.
func (s *Scope) GlobalNorm(ts []Tensor) Tensor {
	if s.err != nil {
		return Tensor{}
	}
	cs := handles(ts)
	return s.run("GlobalNorm", func(o *lib.Ctensor) { *o = lib.WhtGlobalNorm(cs) })
}

// AdamWStep updates params in place (see whittle_ext.h).
func (s *Scope) AdamWStep(params, grads, m, v []Tensor, wd []float64, step int64, lr, beta1, beta2, eps, gradScale float64, fused bool) {
	if s.err != nil {
		return
	}
	if len(grads) != len(params) || len(m) != len(params) || len(v) != len(params) || len(wd) != len(params) {
		s.err = fmt.Errorf("torch AdamWStep: %d params, %d grads, %d/%d moments, %d decays", len(params), len(grads), len(m), len(v), len(wd))
		return
	}
	p, g, mm, vv := handles(params), handles(grads), handles(m), handles(v)
	s.check("AdamWStep", func() { lib.WhtAdamWStep(p, g, mm, vv, wd, step, lr, beta1, beta2, eps, gradScale, fused) })
}

func handles(ts []Tensor) []lib.Ctensor {
	cs := make([]lib.Ctensor, len(ts))
	for i, t := range ts {
		cs[i] = t.c
	}
	return cs
}

// Shape manipulation.

// View reshapes t without copying.
func (s *Scope) View(t Tensor, shape ...int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("View", func(o *lib.Ctensor) { lib.AtgView(o, t.c, shape, len(shape)) })
}

// Reshape reshapes t, copying when its strides require.
func (s *Scope) Reshape(t Tensor, shape ...int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Reshape", func(o *lib.Ctensor) { lib.AtgReshape(o, t.c, shape, len(shape)) })
}

// Transpose swaps two dimensions.
func (s *Scope) Transpose(t Tensor, d0, d1 int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Transpose", func(o *lib.Ctensor) { lib.AtgTranspose(o, t.c, d0, d1) })
}

// Contig is t in row-major layout.
func (s *Scope) Contig(t Tensor) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Contiguous", func(o *lib.Ctensor) { lib.AtgContiguous(o, t.c) })
}

// Narrow is t[..., start:start+length, ...] along dim (a view).
func (s *Scope) Narrow(t Tensor, dim, start, length int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Narrow", func(o *lib.Ctensor) { lib.AtgNarrow(o, t.c, dim, start, length) })
}

// Select is t[..., i, ...] along dim, dropping it.
func (s *Scope) Select(t Tensor, dim, i int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Select", func(o *lib.Ctensor) { lib.AtgSelect(o, t.c, dim, i) })
}

// Cat concatenates along dim.
func (s *Scope) Cat(ts []Tensor, dim int64) Tensor {
	if !s.ok(ts...) || len(ts) == 0 {
		return Tensor{}
	}
	cs := handles(ts)
	return s.run("Cat", func(o *lib.Ctensor) { lib.AtgCat(o, cs, len(cs), dim) })
}

// Stack stacks along a new dim.
func (s *Scope) Stack(ts []Tensor, dim int64) Tensor {
	if !s.ok(ts...) || len(ts) == 0 {
		return Tensor{}
	}
	cs := handles(ts)
	return s.run("Stack", func(o *lib.Ctensor) { lib.AtgStack(o, cs, len(cs), dim) })
}

// Unsqueeze inserts a dim of size 1.
func (s *Scope) Unsqueeze(t Tensor, dim int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Unsqueeze", func(o *lib.Ctensor) { lib.AtgUnsqueeze(o, t.c, dim) })
}

// Expand broadcasts t to shape (-1 keeps a dim).
func (s *Scope) Expand(t Tensor, shape ...int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Expand", func(o *lib.Ctensor) { lib.AtgExpand(o, t.c, shape, len(shape), 0) })
}

// RepeatInterleave repeats each slice along dim n times.
func (s *Scope) RepeatInterleave(t Tensor, n, dim int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("RepeatInterleave", func(o *lib.Ctensor) { lib.AtgRepeatInterleaveSelfInt(o, t.c, n, dim, 0, 0, 1) })
}

// Arithmetic.

// Add is a + b (broadcasting).
func (s *Scope) Add(a, b Tensor) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("Add", func(o *lib.Ctensor) { lib.AtgAdd(o, a.c, b.c) })
}

// Sub is a − b.
func (s *Scope) Sub(a, b Tensor) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("Sub", func(o *lib.Ctensor) { lib.AtgSub(o, a.c, b.c) })
}

// Mul is a·b elementwise.
func (s *Scope) Mul(a, b Tensor) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("Mul", func(o *lib.Ctensor) { lib.AtgMul(o, a.c, b.c) })
}

// Div is a / b elementwise.
func (s *Scope) Div(a, b Tensor) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("Div", func(o *lib.Ctensor) { lib.AtgDiv(o, a.c, b.c) })
}

// Scale is t·v.
func (s *Scope) Scale(t Tensor, v float64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	var r Tensor
	withScalar(v, func(sc lib.Cscalar) {
		r = s.run("MulScalar", func(o *lib.Ctensor) { lib.AtgMulScalar(o, t.c, sc) })
	})
	return r
}

// ScaleInPlace multiplies t by v in place.
func (s *Scope) ScaleInPlace(t Tensor, v float64) {
	if !s.ok(t) {
		return
	}
	withScalar(v, func(sc lib.Cscalar) {
		s.run("MulScalar_", func(o *lib.Ctensor) { lib.AtgMulScalar_(o, t.c, sc) })
	})
}

// AddInPlace adds b into a in place.
func (s *Scope) AddInPlace(a, b Tensor) {
	if s.ok(a, b) {
		s.run("Add_", func(o *lib.Ctensor) { lib.AtgAdd_(o, a.c, b.c) })
	}
}

// Fill sets every element of t to v in place.
func (s *Scope) Fill(t Tensor, v float64) {
	if !s.ok(t) {
		return
	}
	withScalar(v, func(sc lib.Cscalar) {
		s.run("Fill_", func(o *lib.Ctensor) { lib.AtgFill_(o, t.c, sc) })
	})
}

// AddScalar is t + v.
func (s *Scope) AddScalar(t Tensor, v float64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	var r Tensor
	withScalar(v, func(sc lib.Cscalar) {
		r = s.run("AddScalar", func(o *lib.Ctensor) { lib.AtgAddScalar(o, t.c, sc) })
	})
	return r
}

// Square is t².
func (s *Scope) Square(t Tensor) Tensor { return s.unary("Square", t, lib.AtgSquare) }

// Rsqrt is 1/sqrt(t).
func (s *Scope) Rsqrt(t Tensor) Tensor { return s.unary("Rsqrt", t, lib.AtgRsqrt) }

// Sqrt is sqrt(t).
func (s *Scope) Sqrt(t Tensor) Tensor { return s.unary("Sqrt", t, lib.AtgSqrt) }

// Abs is |t|.
func (s *Scope) Abs(t Tensor) Tensor { return s.unary("Abs", t, lib.AtgAbs) }

// Exp is eᵗ.
func (s *Scope) Exp(t Tensor) Tensor { return s.unary("Exp", t, lib.AtgExp) }

// Log is ln t.
func (s *Scope) Log(t Tensor) Tensor { return s.unary("Log", t, lib.AtgLog) }

// Neg is −t.
func (s *Scope) Neg(t Tensor) Tensor { return s.unary("Neg", t, lib.AtgNeg) }

// Silu is t·sigmoid(t).
func (s *Scope) Silu(t Tensor) Tensor { return s.unary("Silu", t, lib.AtgSilu) }

// Tanh is tanh t.
func (s *Scope) Tanh(t Tensor) Tensor { return s.unary("Tanh", t, lib.AtgTanh) }

// Sigmoid is 1/(1+exp(−t)).
func (s *Scope) Sigmoid(t Tensor) Tensor { return s.unary("Sigmoid", t, lib.AtgSigmoid) }

// GeluTanh is GELU with the tanh approximation (PyTorch's
// approximate="tanh", Hugging Face's gelu_pytorch_tanh).
func (s *Scope) GeluTanh(t Tensor) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Gelu", func(o *lib.Ctensor) { lib.AtgGelu(o, t.c, "tanh") })
}

func (s *Scope) unary(op string, t Tensor, f func(*lib.Ctensor, lib.Ctensor)) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run(op, func(o *lib.Ctensor) { f(o, t.c) })
}

// Reductions.

// Sum sums over dims (all dims when none), in t's dtype or dt when ≥ 0.
func (s *Scope) Sum(t Tensor, keep bool, dims ...int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	if len(dims) == 0 {
		return s.run("Sum", func(o *lib.Ctensor) { lib.AtgSum(o, t.c, -1) })
	}
	return s.run("SumDim", func(o *lib.Ctensor) { lib.AtgSumDimIntlist(o, t.c, dims, len(dims), b2i(keep), -1) })
}

// Mean averages over dims (all dims when none).
func (s *Scope) Mean(t Tensor, keep bool, dims ...int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	if len(dims) == 0 {
		return s.run("Mean", func(o *lib.Ctensor) { lib.AtgMean(o, t.c, -1) })
	}
	return s.run("MeanDim", func(o *lib.Ctensor) { lib.AtgMeanDim(o, t.c, dims, len(dims), b2i(keep), -1) })
}

// LogSumExp over one dim.
func (s *Scope) LogSumExp(t Tensor, dim int64, keep bool) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	d := []int64{dim}
	return s.run("LogSumExp", func(o *lib.Ctensor) { lib.AtgLogsumexp(o, t.c, d, 1, b2i(keep)) })
}

// Argmax along dim.
func (s *Scope) Argmax(t Tensor, dim int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Argmax", func(o *lib.Ctensor) { lib.AtgArgmax(o, t.c, dim, 0, 0) })
}

// TopK returns the k largest values along dim and their indices, sorted.
func (s *Scope) TopK(t Tensor, k, dim int64) (Tensor, Tensor) {
	if !s.ok(t) {
		return Tensor{}, Tensor{}
	}
	return s.run2("TopK", func(o *lib.Ctensor) { lib.AtgTopk(o, t.c, k, dim, 1, 1) })
}

// Neural-network functions.

// Embedding gathers rows of w by integer ids.
func (s *Scope) Embedding(w, ids Tensor) Tensor {
	if !s.ok(w, ids) {
		return Tensor{}
	}
	return s.run("Embedding", func(o *lib.Ctensor) { lib.AtgEmbedding(o, w.c, ids.c, -1, 0, 0) })
}

// Linear is x·wᵀ.
func (s *Scope) Linear(x, w Tensor) Tensor {
	if !s.ok(x, w) {
		return Tensor{}
	}
	return s.run("Linear", func(o *lib.Ctensor) { lib.AtgLinear(o, x.c, w.c, nil) })
}

// LinearBias is x·wᵀ + bias.
func (s *Scope) LinearBias(x, w, bias Tensor) Tensor {
	if !s.ok(x, w, bias) {
		return Tensor{}
	}
	return s.run("Linear", func(o *lib.Ctensor) { lib.AtgLinear(o, x.c, w.c, bias.c) })
}

// Matmul is a·b (batched).
func (s *Scope) Matmul(a, b Tensor) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("Matmul", func(o *lib.Ctensor) { lib.AtgMatmul(o, a.c, b.c) })
}

// Softmax along dim, computed in dt when ≥ 0.
func (s *Scope) Softmax(t Tensor, dim int64, dt DType) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Softmax", func(o *lib.Ctensor) { lib.AtgSoftmax(o, t.c, dim, int32(dt)) })
}

// LogSoftmax along dim, computed in dt when ≥ 0.
func (s *Scope) LogSoftmax(t Tensor, dim int64, dt DType) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("LogSoftmax", func(o *lib.Ctensor) { lib.AtgLogSoftmax(o, t.c, dim, int32(dt)) })
}

// Gather picks t[..., idx[...], ...] along dim.
func (s *Scope) Gather(t Tensor, dim int64, idx Tensor) Tensor {
	if !s.ok(t, idx) {
		return Tensor{}
	}
	return s.run("Gather", func(o *lib.Ctensor) { lib.AtgGather(o, t.c, dim, idx.c, 0) })
}

// IndexSelect picks slices of t along dim.
func (s *Scope) IndexSelect(t Tensor, dim int64, idx Tensor) Tensor {
	if !s.ok(t, idx) {
		return Tensor{}
	}
	return s.run("IndexSelect", func(o *lib.Ctensor) { lib.AtgIndexSelect(o, t.c, dim, idx.c) })
}

// MaskedFill sets t's elements where mask is true to v.
func (s *Scope) MaskedFill(t, mask Tensor, v float64) Tensor {
	if !s.ok(t, mask) {
		return Tensor{}
	}
	var r Tensor
	withScalar(v, func(sc lib.Cscalar) {
		r = s.run("MaskedFill", func(o *lib.Ctensor) { lib.AtgMaskedFill(o, t.c, mask.c, sc) })
	})
	return r
}

// Tril keeps the lower triangle up to diagonal d.
func (s *Scope) Tril(t Tensor, d int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Tril", func(o *lib.Ctensor) { lib.AtgTril(o, t.c, d) })
}

// Triu keeps the upper triangle from diagonal d.
func (s *Scope) Triu(t Tensor, d int64) Tensor {
	if !s.ok(t) {
		return Tensor{}
	}
	return s.run("Triu", func(o *lib.Ctensor) { lib.AtgTriu(o, t.c, d) })
}

// CosineSimilarity along dim.
func (s *Scope) CosineSimilarity(a, b Tensor, dim int64, eps float64) Tensor {
	if !s.ok(a, b) {
		return Tensor{}
	}
	return s.run("CosineSimilarity", func(o *lib.Ctensor) { lib.AtgCosineSimilarity(o, a.c, b.c, dim, eps) })
}

// SDPA is fused scaled-dot-product attention with a causal mask
// (libtorch ≥ 2.0; an error on older builds).
func (s *Scope) SDPA(q, k, v Tensor, scale float64) Tensor {
	if !s.ok(q, k, v) {
		return Tensor{}
	}
	return s.run("ScaledDotProductAttention", func(o *lib.Ctensor) {
		lib.AtgScaledDotProductAttention(o, q.c, k.c, v.c, nil, 0, 1, scale, 0)
	})
}

// SDPAMasked is fused scaled-dot-product attention where query i attends
// to key j exactly where the boolean mask allow[i, j] is true.
func (s *Scope) SDPAMasked(q, k, v, allow Tensor, scale float64) Tensor {
	if !s.ok(q, k, v, allow) {
		return Tensor{}
	}
	return s.run("ScaledDotProductAttention", func(o *lib.Ctensor) {
		lib.AtgScaledDotProductAttention(o, q.c, k.c, v.c, allow.c, 0, 0, scale, 0)
	})
}

// ScatterAdd is t with src added at index along dim (out of place).
func (s *Scope) ScatterAdd(t Tensor, dim int64, index, src Tensor) Tensor {
	if !s.ok(t, index, src) {
		return Tensor{}
	}
	return s.run("ScatterAdd", func(o *lib.Ctensor) { lib.AtgScatterAdd(o, t.c, dim, index.c, src.c) })
}

// IndexAdd is t with the rows (slices along dim) of src added at the
// positions idx names, repeated positions accumulating (out of place,
// differentiable with respect to t and src).
func (s *Scope) IndexAdd(t Tensor, dim int64, idx, src Tensor) Tensor {
	if !s.ok(t, idx, src) {
		return Tensor{}
	}
	return s.run("IndexAdd", func(o *lib.Ctensor) { lib.AtgIndexAdd(o, t.c, dim, idx.c, src.c) })
}

// Float64s copies t's elements (converted to float64) into a new slice.
func (s *Scope) Float64s(t Tensor) []float64 {
	if !s.ok(t) {
		return nil
	}
	c := s.ToDType(t, Float64)
	n := c.numel(s)
	if s.err != nil {
		return nil
	}
	out := make([]float64, n)
	if n > 0 {
		s.check("Float64s", func() { lib.AtCopyData(c.c, unsafe.Pointer(&out[0]), uint(n), 8) })
	}
	return out
}

// ManualSeed seeds libtorch's random generators.
func ManualSeed(seed int64) { lib.WhtManualSeed(seed) }

// Randn is a new tensor of standard normal samples.
func (s *Scope) Randn(shape []int64, dt DType, dev Device) Tensor {
	dims := nonEmpty(shape)
	return s.run("Randn", func(o *lib.Ctensor) { lib.AtgRandn(o, dims, len(shape), int32(dt), int32(dev)) })
}

// Randint is a new int64 tensor of samples from [0, high).
func (s *Scope) Randint(high int64, shape []int64, dev Device) Tensor {
	dims := nonEmpty(shape)
	return s.run("Randint", func(o *lib.Ctensor) { lib.AtgRandint(o, high, dims, len(shape), int32(Int64), int32(dev)) })
}
