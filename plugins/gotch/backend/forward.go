package backend

import (
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// acts are one layer's activations, [B, T, C] views handed to a hook and
// valid until it returns.
type acts struct {
	Input, AttnNormOut, AttnOut, Mid, MLPNormOut, MLPAct, Output torch.Tensor
}

// fwdOpts modify a forward pass.
type fwdOpts struct {
	// skip bypasses layers: the residual stream passes through unchanged.
	skip map[int]bool
	// hook sees each computed layer's activations.
	hook func(l int, a *acts) error
	// adapters add low-rank updates to projections (LoRA training).
	adapters *loraSet
	// cache, for decoding one sequence: the input continues the cached
	// positions, and each layer's keys and values are appended to it.
	cache *kvCache
}

// kvCache holds each layer's keys and values after RoPE and before the
// grouped-query expansion, [1, KVHeads, pos, head_dim], so that decoding
// a token costs one token's forward instead of the whole sequence's.
type kvCache struct {
	k, v []torch.Tensor // by layer, owned by the cache
	pos  int            // positions cached
	// ropeLen is the RoPE table length used while decoding: one table
	// covers every position of the sequence.
	ropeLen int
}

func newKVCache(layers, ropeLen int) *kvCache {
	return &kvCache{k: make([]torch.Tensor, layers), v: make([]torch.Tensor, layers), ropeLen: ropeLen}
}

func (c *kvCache) free() {
	for l := range c.k {
		torch.Free(c.k[l])
		torch.Free(c.v[l])
		c.k[l], c.v[l] = torch.Tensor{}, torch.Tensor{}
	}
	c.pos = 0
}

// extend appends a layer's new keys and values and returns the whole
// sequence's, owned by the cache.
func (c *kvCache) extend(s *torch.Scope, l int, k, v torch.Tensor) (torch.Tensor, torch.Tensor) {
	if c.k[l].Defined() {
		k, v = s.Cat([]torch.Tensor{c.k[l], k}, 2), s.Cat([]torch.Tensor{c.v[l], v}, 2)
	}
	if s.Err() != nil {
		return torch.Tensor{}, torch.Tensor{}
	}
	torch.Free(c.k[l])
	torch.Free(c.v[l])
	c.k[l], c.v[l] = s.Keep(k), s.Keep(v)
	return c.k[l], c.v[l]
}

// weight returns a model weight in dtype dt: the stored tensor itself
// when it already is, else a cast that autograd differentiates through
// (so float32 masters get float32 gradients from bfloat16 products).
func (m *model) weight(s *torch.Scope, name string, dt torch.DType) torch.Tensor {
	w, ok := m.w[name]
	if !ok {
		s.Fail(fmt.Errorf("model has no tensor %s", name))
		return torch.Tensor{}
	}
	if m.store == dt {
		return w
	}
	return s.ToDType(w, dt)
}

// rmsNorm is Hugging Face's LlamaRMSNorm in float32.
func (m *model) rmsNorm(s *torch.Scope, x torch.Tensor, name string) torch.Tensor {
	w := m.weight(s, name, torch.Float32)
	r := s.Rsqrt(s.AddScalar(s.Mean(s.Square(x), true, -1), m.cfg.NormEps))
	return s.Mul(s.Mul(x, r), w)
}

// computeDType is the dtype of m's matrix products.
func (b *Backend) computeDType(m *model) torch.DType {
	if m.store == torch.BFloat16 {
		return torch.BFloat16
	}
	return b.compute
}

// forward runs B sequences of T tokens (ids: int64 [B, T] on the device)
// through the decoder and the final norm and returns the normalized
// hidden states, float32 [B·T, hidden], owned by s. With gradients
// enabled the result is differentiable with respect to the weights.
func (b *Backend) forward(s *torch.Scope, m *model, ids torch.Tensor, B, T int, o fwdOpts) (torch.Tensor, error) {
	cfg := &m.cfg
	cdt := b.computeDType(m)
	x := s.ToDType(s.Embedding(m.w[ir.NameEmbed], ids), torch.Float32)
	for l, lc := range cfg.Layers {
		if o.skip[l] {
			continue
		}
		ls := torch.NewScope()
		out, err := b.layer(ls, m, l, lc, x, B, T, cdt, o)
		if err != nil {
			ls.Free()
			return torch.Tensor{}, fmt.Errorf("layer %d: %w", l, err)
		}
		ls.Keep(out)
		ls.Free()
		s.Drop(x)
		x = s.Adopt(out)
	}
	if o.cache != nil {
		o.cache.pos += T
	}
	h := m.rmsNorm(s, x, ir.NameFinalNorm)
	h = s.View(h, int64(B*T), int64(cfg.Hidden))
	return h, s.Err()
}

// layer runs one decoder layer on the float32 residual stream x [B, T, D].
func (b *Backend) layer(s *torch.Scope, m *model, l int, lc ir.LayerConfig, x torch.Tensor, B, T int, cdt torch.DType, o fwdOpts) (torch.Tensor, error) {
	name := func(role string) string { return ir.LayerName(l, role) }
	bb, tt := int64(B), int64(T)
	hd := int64(lc.HeadDim)
	proj := func(in torch.Tensor, role string) torch.Tensor {
		y := s.Linear(in, m.weight(s, name(role), cdt))
		if o.adapters != nil {
			y = o.adapters.apply(s, l, role, in, y, cdt)
		}
		return y
	}

	h := m.rmsNorm(s, x, name(ir.RoleAttnNorm))
	hc := s.ToDType(h, cdt)
	q := s.Transpose(s.View(proj(hc, ir.RoleQ), bb, tt, int64(lc.Heads), hd), 1, 2)
	k := s.Transpose(s.View(proj(hc, ir.RoleK), bb, tt, int64(lc.KVHeads), hd), 1, 2)
	v := s.Transpose(s.View(proj(hc, ir.RoleV), bb, tt, int64(lc.KVHeads), hd), 1, 2)
	pos, ropeLen := 0, T
	if o.cache != nil {
		if B != 1 || (o.cache.pos > 0 && T != 1) {
			return torch.Tensor{}, fmt.Errorf("the KV cache decodes one sequence, one token at a time after the prompt (batch %d, %d tokens)", B, T)
		}
		pos, ropeLen = o.cache.pos, max(o.cache.ropeLen, o.cache.pos+T)
	}
	rt, err := b.ropeTable(m, lc.HeadDim, ropeLen, cdt)
	if err != nil {
		return torch.Tensor{}, err
	}
	if ropeLen != T {
		rt = ropeTab{cos: s.Narrow(rt.cos, 0, int64(pos), tt), sin: s.Narrow(rt.sin, 0, int64(pos), tt)}
	}
	q, k = rope(s, q, rt), rope(s, k, rt)
	sk := tt // keys attended to
	if o.cache != nil {
		k, v = o.cache.extend(s, l, k, v)
		sk = int64(pos + T)
	}
	if rep := int64(lc.GroupSize()); rep > 1 {
		kv := int64(lc.KVHeads)
		k = s.Reshape(s.Expand(s.Unsqueeze(k, 2), bb, kv, rep, sk, hd), bb, kv*rep, sk, hd)
		v = s.Reshape(s.Expand(s.Unsqueeze(v, 2), bb, kv, rep, sk, hd), bb, kv*rep, sk, hd)
	}
	var a torch.Tensor
	if pos > 0 {
		// One query attends to every cached key: no mask.
		a = attendAll(s, q, k, v, 1/math.Sqrt(float64(lc.HeadDim)))
	} else {
		a = b.attention(s, q, k, v, T, 1/math.Sqrt(float64(lc.HeadDim)))
	}
	a = s.Reshape(s.Transpose(a, 1, 2), bb, tt, int64(lc.Heads)*hd)
	mid := s.Add(x, s.ToDType(proj(a, ir.RoleO), torch.Float32))

	h2 := m.rmsNorm(s, mid, name(ir.RoleMLPNorm))
	h2c := s.ToDType(h2, cdt)
	act := s.Mul(s.Silu(proj(h2c, ir.RoleGate)), proj(h2c, ir.RoleUp))
	out := s.Add(mid, s.ToDType(proj(act, ir.RoleDown), torch.Float32))
	if err := s.Err(); err != nil {
		return torch.Tensor{}, err
	}
	if o.hook != nil {
		if err := o.hook(l, &acts{Input: x, AttnNormOut: h, AttnOut: a, Mid: mid, MLPNormOut: h2, MLPAct: act, Output: out}); err != nil {
			return torch.Tensor{}, err
		}
	}
	return out, s.Err()
}

// rope rotates the two halves of each head (Hugging Face's order):
// x·cos + rotate_half(x)·sin with rotate_half(x) = (−x₂, x₁).
func rope(s *torch.Scope, x torch.Tensor, rt ropeTab) torch.Tensor {
	shape := x.Shape()
	if len(shape) != 4 {
		s.Fail(fmt.Errorf("rope: input of shape %v", shape))
		return torch.Tensor{}
	}
	half := shape[3] / 2
	x1 := s.Narrow(x, 3, 0, half)
	x2 := s.Narrow(x, 3, half, half)
	rot := s.Cat([]torch.Tensor{s.Neg(x2), x1}, 3)
	return s.Add(s.Mul(x, rt.cos), s.Mul(rot, rt.sin))
}

// attention is causal softmax(q·kᵀ·scale)·v over [B, H, T, hd] tensors:
// libtorch's fused kernel when this libtorch has one (≥ 2.0), else the
// plain formula with the softmax in float32.
func (b *Backend) attention(s *torch.Scope, q, k, v torch.Tensor, T int, scale float64) torch.Tensor {
	if s.Err() != nil {
		return torch.Tensor{}
	}
	if b.sdpa != sdpaMissing {
		probe := torch.NewScope()
		a := probe.SDPA(q, k, v, scale)
		if probe.Err() == nil {
			b.sdpa = sdpaOK
			probe.Keep(a)
			probe.Free()
			return s.Adopt(a)
		}
		if b.sdpa == sdpaOK {
			s.Fail(probe.Err())
			probe.Free()
			return torch.Tensor{}
		}
		b.log.Info("fused attention unavailable; using the plain formula", "libtorch", torch.Version(), "err", probe.Err())
		probe.Free()
		b.sdpa = sdpaMissing
	}
	sc := s.Scale(s.Matmul(q, s.Transpose(k, 2, 3)), scale)
	sc = s.MaskedFill(sc, b.causalMask(s, T), math.Inf(-1))
	p := s.ToDType(s.Softmax(sc, -1, torch.Float32), q.DType())
	return s.Matmul(p, v)
}

// attendAll is softmax(q·kᵀ·scale)·v without a mask, in float32 (one
// query's worth of work: precision costs nothing here).
func attendAll(s *torch.Scope, q, k, v torch.Tensor, scale float64) torch.Tensor {
	f := func(t torch.Tensor) torch.Tensor { return s.ToDType(t, torch.Float32) }
	sc := s.Scale(s.Matmul(f(q), s.Transpose(f(k), 2, 3)), scale)
	return s.ToDType(s.Matmul(s.Softmax(sc, -1, torch.Float32), f(v)), q.DType())
}

type sdpaState int

const (
	sdpaUnknown sdpaState = iota
	sdpaOK
	sdpaMissing
)

// causalMask is the [T, T] boolean mask of future positions.
func (b *Backend) causalMask(s *torch.Scope, T int) torch.Tensor {
	if m, ok := b.masks[T]; ok {
		return m
	}
	ms := torch.NewScope()
	mask := ms.Triu(ms.Full([]int64{int64(T), int64(T)}, 1, torch.Bool, b.dev), 1)
	if err := ms.Err(); err != nil {
		s.Fail(err)
		ms.Free()
		return torch.Tensor{}
	}
	ms.Keep(mask)
	ms.Free()
	if b.masks == nil {
		b.masks = map[int]torch.Tensor{}
	}
	b.masks[T] = mask
	return mask
}

// logits returns float32 logits [rows, V] of float32 hidden states h with
// classifier weight w already in the compute dtype.
func logits(s *torch.Scope, h, w torch.Tensor, cdt torch.DType) torch.Tensor {
	return s.ToDType(s.Linear(s.ToDType(h, cdt), w), torch.Float32)
}
