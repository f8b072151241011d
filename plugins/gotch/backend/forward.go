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
	// MoE, in a mixture-of-experts layer, replaces MLPAct (undefined
	// there).
	MoE *moeActs
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
	// aux, when set, collects the routers' probabilities and counts for
	// their load-balancing loss.
	aux *routerAux
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

// rmsNorm is Hugging Face's RMSNorm in float32 over the last dimension of
// the float32 x, with the family's offset added to the weight (Gemma's
// (1 + w)).
func (m *model) rmsNorm(s *torch.Scope, x torch.Tensor, name string) torch.Tensor {
	w := m.weight(s, name, torch.Float32)
	if off := m.cfg.NormOffset; off != 0 {
		w = s.AddScalar(w, off)
	}
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
	x := b.embed(s, m, ids)
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

// embed looks up the tokens' embeddings as the float32 residual stream.
// Gemma scales them by √hidden as Hugging Face does: the factor rounded
// to the embeddings' dtype and the product taken in it (bfloat16 for a
// bfloat16 model; float32 for float32 masters, as under autocast).
func (b *Backend) embed(s *torch.Scope, m *model, ids torch.Tensor) torch.Tensor {
	e := s.Embedding(m.w[ir.NameEmbed], ids)
	if m.cfg.EmbedScale {
		e = s.Mul(e, s.Full(nil, math.Sqrt(float64(m.cfg.Hidden)), m.store, b.dev))
	}
	return s.ToDType(e, torch.Float32)
}

// layer runs one decoder layer on the float32 residual stream x [B, T, D].
func (b *Backend) layer(s *torch.Scope, m *model, l int, lc ir.LayerConfig, x torch.Tensor, B, T int, cdt torch.DType, o fwdOpts) (torch.Tensor, error) {
	cfg := &m.cfg
	lt := cfg.LayerTensors(l)
	bb, tt := int64(B), int64(T)
	hd := int64(lc.HeadDim)
	// proj applies the weight (and bias) named w (and bias); role keys
	// the LoRA adapter, which adds to the biased output as PEFT's does.
	proj := func(in torch.Tensor, role, w, bias string) torch.Tensor {
		var y torch.Tensor
		if bias != "" {
			y = s.LinearBias(in, m.weight(s, w, cdt), m.weight(s, bias, cdt))
		} else {
			y = s.Linear(in, m.weight(s, w, cdt))
		}
		if o.adapters != nil {
			y = o.adapters.apply(s, l, role, in, y, cdt)
		}
		return y
	}
	// heads splits a projection into [B, heads, T, hd], normalizing each
	// head first when the family has q/k norms (before RoPE, in float32).
	heads := func(y torch.Tensor, n int, norm string) torch.Tensor {
		y = s.View(y, bb, tt, int64(n), hd)
		if norm != "" {
			y = s.ToDType(m.rmsNorm(s, s.ToDType(y, torch.Float32), norm), cdt)
		}
		return s.Transpose(y, 1, 2)
	}

	h := m.rmsNorm(s, x, lt.AttnNorm)
	hc := s.ToDType(h, cdt)
	q := heads(proj(hc, ir.RoleQ, lt.Q, lt.QBias), lc.Heads, lt.QNorm)
	k := heads(proj(hc, ir.RoleK, lt.K, lt.KBias), lc.KVHeads, lt.KNorm)
	v := heads(proj(hc, ir.RoleV, lt.V, lt.VBias), lc.KVHeads, "")
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
	at := attnSpec{scale: cfg.AttnScale(lc.HeadDim), softCap: cfg.AttnSoftCap, window: lc.Window}
	var a torch.Tensor
	if pos > 0 {
		a = attendLast(s, q, k, v, at)
	} else {
		a = b.attention(s, q, k, v, T, at)
	}
	a = s.Reshape(s.Transpose(a, 1, 2), bb, tt, int64(lc.Heads)*hd)
	ao := s.ToDType(proj(a, ir.RoleO, lt.O, ""), torch.Float32)
	if lt.AttnPostNorm != "" {
		ao = m.rmsNorm(s, ao, lt.AttnPostNorm)
	}
	mid := s.Add(x, ao)

	h2 := m.rmsNorm(s, mid, lt.MLPNorm)
	var act, mo torch.Tensor
	var moe *moeActs
	if lc.MoE() {
		var err error
		mo, moe, err = b.moe(s, m, l, lc, s.View(h2, bb*tt, int64(cfg.Hidden)), B*T, cdt, o.hook != nil)
		if err != nil {
			return torch.Tensor{}, err
		}
		mo = s.View(mo, bb, tt, int64(cfg.Hidden))
		if o.aux != nil {
			o.aux.add(s, moe)
		}
	} else {
		h2c := s.ToDType(h2, cdt)
		act = gated(s, cfg, proj(h2c, ir.RoleGate, lt.Gate, ""), proj(h2c, ir.RoleUp, lt.Up, ""))
		mo = s.ToDType(proj(act, ir.RoleDown, lt.Down, ""), torch.Float32)
	}
	if lt.MLPPostNorm != "" {
		mo = m.rmsNorm(s, mo, lt.MLPPostNorm)
	}
	out := s.Add(mid, mo)
	if err := s.Err(); err != nil {
		return torch.Tensor{}, err
	}
	if o.hook != nil {
		if err := o.hook(l, &acts{Input: x, AttnNormOut: h, AttnOut: a, Mid: mid, MLPNormOut: h2, MLPAct: act, MoE: moe, Output: out}); err != nil {
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

// attnSpec is how one layer attends: the score scale, the soft cap of
// the scaled scores (0: none) and the sliding window (0: global).
type attnSpec struct {
	scale, softCap float64
	window         int
}

// attention is causal softmax(q·kᵀ·scale)·v over [B, H, T, hd] tensors,
// limited to the window when the layer has one: libtorch's fused kernel
// when this libtorch has one (≥ 2.0), else the plain formula with the
// softmax in float32. Soft-capped scores need the plain formula (the
// fused kernel cannot cap), so the choice is made per layer.
func (b *Backend) attention(s *torch.Scope, q, k, v torch.Tensor, T int, at attnSpec) torch.Tensor {
	if s.Err() != nil {
		return torch.Tensor{}
	}
	windowed := at.window > 0 && at.window < T
	if b.sdpa != sdpaMissing && at.softCap == 0 {
		probe := torch.NewScope()
		var a torch.Tensor
		if windowed {
			a = probe.SDPAMasked(q, k, v, b.attnMask(probe, T, at.window, true), at.scale)
		} else {
			a = probe.SDPA(q, k, v, at.scale)
		}
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
	sc := s.Matmul(q, s.Transpose(k, 2, 3))
	if at.softCap > 0 {
		sc = softCap(s, s.Scale(s.ToDType(sc, torch.Float32), at.scale), at.softCap)
	} else {
		sc = s.Scale(sc, at.scale)
	}
	window := at.window
	if !windowed {
		window = 0
	}
	sc = s.MaskedFill(sc, b.attnMask(s, T, window, false), math.Inf(-1))
	p := s.ToDType(s.Softmax(sc, -1, torch.Float32), q.DType())
	return s.Matmul(p, v)
}

// attendLast is the attention of the newest position (one query) over
// the cached keys, the window's most recent ones when the layer has a
// window, in float32 (one query's worth of work: precision costs nothing
// here).
func attendLast(s *torch.Scope, q, k, v torch.Tensor, at attnSpec) torch.Tensor {
	if w := int64(at.window); w > 0 {
		if sk := k.Shape()[2]; sk > w {
			k, v = s.Narrow(k, 2, sk-w, w), s.Narrow(v, 2, sk-w, w)
		}
	}
	f := func(t torch.Tensor) torch.Tensor { return s.ToDType(t, torch.Float32) }
	sc := s.Scale(s.Matmul(f(q), s.Transpose(f(k), 2, 3)), at.scale)
	if at.softCap > 0 {
		sc = softCap(s, sc, at.softCap)
	}
	return s.ToDType(s.Matmul(s.Softmax(sc, -1, torch.Float32), f(v)), q.DType())
}

// softCap is c·tanh(x/c).
func softCap(s *torch.Scope, x torch.Tensor, c float64) torch.Tensor {
	return s.Scale(s.Tanh(s.Scale(x, 1/c)), c)
}

type sdpaState int

const (
	sdpaUnknown sdpaState = iota
	sdpaOK
	sdpaMissing
)

// maskKey identifies a cached [T, T] attention mask.
type maskKey struct {
	t, window int
	allow     bool
}

// attnMask is the [T, T] boolean mask of the keys query i may attend to
// (allow) or of those it may not (!allow): keys j with i − window < j ≤ i,
// or j ≤ i when window is 0. Masks are built once per key.
func (b *Backend) attnMask(s *torch.Scope, T, window int, allow bool) torch.Tensor {
	key := maskKey{T, window, allow}
	if m, ok := b.masks[key]; ok {
		return m
	}
	ms := torch.NewScope()
	ones := ms.Full([]int64{int64(T), int64(T)}, 1, torch.Bool, b.dev)
	mask := ms.Tril(ones, 0)
	if window > 0 {
		mask = ms.Triu(mask, int64(1-window))
	}
	if !allow {
		mask = ms.MaskedFill(ones, mask, 0)
	}
	if err := ms.Err(); err != nil {
		s.Fail(err)
		ms.Free()
		return torch.Tensor{}
	}
	ms.Keep(mask)
	ms.Free()
	if b.masks == nil {
		b.masks = map[maskKey]torch.Tensor{}
	}
	b.masks[key] = mask
	return mask
}

// logits returns m's float32 logits [rows, V] of float32 hidden states h
// with classifier weight w already in the compute dtype, soft-capped when
// the family caps them.
func (m *model) logits(s *torch.Scope, h, w torch.Tensor, cdt torch.DType) torch.Tensor {
	z := s.ToDType(s.Linear(s.ToDType(h, cdt), w), torch.Float32)
	if c := m.cfg.FinalSoftCap; c > 0 {
		z = softCap(s, z, c)
	}
	return z
}

// softCapGrad turns a gradient with respect to m's (capped) logits z into
// one with respect to the classifier's output u, z = c·tanh(u/c):
// dz/du = 1 − (z/c)².
func (m *model) softCapGrad(s *torch.Scope, z, g torch.Tensor) torch.Tensor {
	c := m.cfg.FinalSoftCap
	if c <= 0 {
		return g
	}
	return s.Mul(g, s.AddScalar(s.Neg(s.Square(s.Scale(z, 1/c))), 1))
}
