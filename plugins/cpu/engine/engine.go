// Package engine is the CPU backend's training engine: a batched float32
// forward pass of the IR's decoder with every family option of ir.Config
// (per-layer sizes may differ) and mixture-of-experts layers (moe.go:
// tokens grouped per expert, no dense all-experts compute), chunked
// losses over the vocabulary (next-token cross-entropy, masked SFT,
// forward KL to a teacher, the routers' balancing loss), a
// hand-written backward pass in the manner of llm.c, and AdamW with warm-up
// and cosine decay.
//
// Matrix products go through package blas; everything else is split across
// goroutines by rows, heads or columns so that each output element is
// reduced in a fixed order. Results are therefore bitwise reproducible for a
// given machine and build, whatever the thread count.
package engine

import (
	"fmt"
	"math"
	"runtime"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// Options configures an Engine.
type Options struct {
	// Threads is the number of goroutines; 0 means GOMAXPROCS.
	Threads int
	// LossChunk is how many rows of logits the loss materializes at once;
	// 0 picks about 32M floats' worth (at least 256 rows). Larger chunks
	// repack the classifier less often.
	LossChunk int
	// Inference skips everything backward needs: no gradients, and one set
	// of activation buffers shared by all layers.
	Inference bool
	// Frozen reports parameters (by canonical tensor name) that get no
	// gradient and that the optimizer leaves alone. Nil freezes nothing.
	Frozen func(name string) bool
	// OnLayer, when set, is called after each layer's forward with views of
	// its activations, valid until the call returns (not for layers that
	// SetSkip bypasses). Importance scoring reads them here.
	OnLayer func(layer int, a *Activations) error
	// AttentionBudget bounds the bytes of attention probabilities
	// ([B, heads, T, T] per layer) kept from the forward pass for the
	// backward one; past it the backward recomputes them, one (sequence,
	// head) at a time, bit for bit. 0 means DefaultAttentionBudget; a
	// negative budget always recomputes.
	AttentionBudget int64
}

// DefaultAttentionBudget keeps attention probabilities up to 256 MiB: short
// contexts skip the recomputation, long ones fit in memory.
const DefaultAttentionBudget = 256 << 20

// Activations are one layer's forward activations over the N = B·T rows
// of the batch, row-major.
type Activations struct {
	// Input is the residual stream entering the layer [N, hidden].
	Input []float32
	// AttnNormOut is the attention input norm's output [N, hidden]. It and
	// MLPNormOut are the block-input norms Minitron's hidden-channel
	// importance reads; Gemma 2's post norms feed the residual stream, not
	// a block.
	AttnNormOut []float32
	// AttnOut is the concatenated head outputs, the input of o_proj [N, heads·head_dim].
	AttnOut []float32
	// Mid is the residual stream after attention [N, hidden] (with
	// PostNorms, the attention post norm's output added to Input).
	Mid []float32
	// MLPNormOut is the MLP input norm's output [N, hidden].
	MLPNormOut []float32
	// MLPAct is act(gate)·up (SiLU or GELU), the input of down_proj [N, mlp].
	MLPAct []float32
	// Output is the residual stream leaving the layer [N, hidden].
	Output []float32
	// AttnPostNormOut and MLPPostNormOut are, with PostNorms, what the
	// attention and the MLP add to the residual stream (the outputs of
	// Gemma 2's post norms) [N, hidden]; nil otherwise.
	AttnPostNormOut, MLPPostNormOut []float32
	// MoE is, for a mixture-of-experts layer, its routing and experts'
	// activations (MLPAct is then empty); nil for a dense layer.
	MoE *MoEActivations
}

// MoEActivations are a mixture-of-experts layer's forward state. Each row
// is routed to TopK experts (its slots); the routed (row, slot) pairs are
// grouped expert by expert, rows in order within an expert, and the
// grouped arrays are indexed by a pair's grouped position.
type MoEActivations struct {
	Experts, TopK int
	// Probs are the router probabilities [N, experts] (softmax over all
	// experts, before top-k).
	Probs []float32
	// Selected [N, TopK] are each row's experts, by probability
	// descending (ties go to the lower index), and Weights [N, TopK]
	// their routing weights (renormalized when the config says so).
	Selected []int32
	Weights  []float32
	// Pos [N·TopK] is the grouped position of pair (row, slot) at
	// row·TopK + slot. Expert e's pairs are the grouped positions
	// [Offsets[e], Offsets[e+1]), and Rows gives each position's row.
	Pos     []int32
	Offsets []int
	Rows    []int32
	// Act [N·TopK, expert_mlp] is each pair's expert activation
	// act(gate)·up, the input of the expert's down projection, and Out
	// [N·TopK, hidden] the expert's output before its routing weight.
	Act, Out []float32
	// SharedAct [N, shared_mlp] is the shared expert's activation and
	// SharedGate [N] its sigmoid gate; nil without a shared expert.
	SharedAct, SharedGate []float32
}

// PairWeight is the routing weight of the pair at grouped position j.
func (m *MoEActivations) PairWeight(j int) float32 {
	r := int(m.Rows[j])
	for s := 0; s < m.TopK; s++ {
		if int(m.Pos[r*m.TopK+s]) == j {
			return m.Weights[r*m.TopK+s]
		}
	}
	panic("engine: grouped position without a pair")
}

func (a *moeActs) view(p *Layer, k, n, d int) *MoEActivations {
	nk := n * k
	v := &MoEActivations{
		Experts: p.Experts, TopK: k,
		Probs: a.probs[:n*p.Experts], Selected: a.sel[:nk], Weights: a.wts[:nk],
		Pos: a.pos[:nk], Offsets: a.off[:p.Experts+1], Rows: a.rows[:nk],
		Act: a.act[:nk*p.ExpertMLP], Out: a.yg[:nk*d],
	}
	if p.SharedDown != nil {
		v.SharedAct, v.SharedGate = a.sact[:n*p.SharedMLP], a.sg[:n]
	}
	return v
}

// layerActs holds the activations backward needs for one layer.
type layerActs struct {
	ln1, q, k, v, ao, mid, ln2, gate, up, act []float32
	rstd1, rstd2                              []float32
	att                                       []float32 // [B, H, T, T] softmax probabilities, when kept

	// With QKNorm: q and k before their norms, and the norms' 1/rms per
	// row and head.
	qraw, kraw, rstdq, rstdk []float32
	// With PostNorms: the o_proj and down_proj outputs before their norms,
	// the norms' outputs and their 1/rms.
	oout, dout, apn, mpn, rstdpa, rstdpm []float32
	// moe is a mixture-of-experts layer's state.
	moe *moeActs
}

// Engine runs one model. It is not safe for concurrent use.
type Engine struct {
	P *Params
	// G holds the gradients that Backward accumulates; nil for inference.
	G *Params

	opts    Options
	threads int
	frozen  []bool // per tensor of P, in Tensors order
	index   map[*float32]int

	// Shape of the last Forward.
	b, t, n int
	// keepProbs: the forward keeps attention probabilities in layerActs.att
	// for the backward; otherwise both compute them in scratch.probs.
	keepProbs bool
	tokens    []int32

	resid  [][]float32 // L+1 residual streams [N, hidden]
	acts   []layerActs
	lnf    []float32
	rstdf  []float32
	rope   [][]float32 // per layer, per position: head_dim/2 cosines, then sines
	ropeT  int
	dlnf   []float32 // gradient at the final norm's output, summed by LossGrad
	ready  bool      // a forward has run
	gradOK bool      // LossGrad has added to dlnf since the last Forward or Backward

	scratch    scratch
	moeScratch moeScratch
	// aux is, per layer, the gradient the router balancing loss puts on
	// each expert's router probability in every row (nil: none), which
	// LossGrad sets and Backward consumes.
	aux [][]float64
	// routed are the MoE layers' routing totals of the last Forward.
	routed []routeSums
	// Logit chunks of the loss (student, teacher), kept between calls.
	logitBuf, teacherBuf []float32

	skip     []bool      // layers bypassed by Forward (SetSkip)
	lora     *engineLoRA // attached adapters (SetLoRA)
	gathered []float32   // final-norm rows gathered by RowScores
}

// scratch is backward working memory reused across layers.
type scratch struct {
	dres, dln, dq, dk, dv, dao, dgate, dup, dact []float32
	// dqn, dkn: gradients before the q/k norms (QKNorm); dpost: at a post
	// norm's input (PostNorms).
	dqn, dkn, dpost []float32
	att             [][]float32 // per worker [T, T]
	// raw are per-worker [T, T] uncapped scores, for the soft cap's
	// derivative (AttnSoftCap).
	raw [][]float32
	// probs are per-worker [T, T] probabilities when they are not kept.
	probs [][]float32
}

// New builds an engine over p, which must come from NewParams, FromIR or
// Clone; in training mode it allocates gradients.
func New(p *Params, opts Options) (*Engine, error) {
	if err := p.Config.Check(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if len(p.tensors) == 0 {
		return nil, fmt.Errorf("engine: parameters were not allocated by NewParams")
	}
	e := &Engine{P: p, opts: opts, threads: opts.Threads}
	if e.threads <= 0 {
		e.threads = runtime.GOMAXPROCS(0)
	}
	e.frozen = make([]bool, len(p.tensors))
	e.index = make(map[*float32]int, len(p.tensors))
	for i, t := range p.tensors {
		e.index[&t.Data[0]] = i
	}
	if !opts.Inference {
		e.G = p.ZerosLike()
		if opts.Frozen != nil {
			for i, t := range p.tensors {
				e.frozen[i] = opts.Frozen(t.Name)
			}
		}
	}
	return e, nil
}

// Threads is the number of goroutines the engine uses.
func (e *Engine) Threads() int { return e.threads }

// Vocab is the size of the output distribution.
func (e *Engine) Vocab() int { return e.P.Config.Vocab }

// Rows is B·T of the last Forward.
func (e *Engine) Rows() int { return e.n }

// Frozen reports whether the named tensor is frozen.
func (e *Engine) Frozen(name string) bool {
	for i, t := range e.P.tensors {
		if t.Name == name {
			return e.frozen[i]
		}
	}
	return false
}

// gradOf returns the gradient buffer of weight view w of P, or nil when w
// is frozen or the engine does inference only.
func (e *Engine) gradOf(w []float32) []float32 {
	i, ok := e.index[&w[0]]
	if !ok {
		panic("engine: gradient of a tensor outside the model")
	}
	if e.G == nil || e.frozen[i] {
		return nil
	}
	return e.G.tensors[i].Data
}

func (e *Engine) alloc(b, t int) {
	n := b * t
	cfg := &e.P.Config
	d := cfg.Hidden
	if n == e.n && b == e.b {
		return
	}
	e.b, e.t, e.n = b, t, n
	e.resid = make([][]float32, len(cfg.Layers)+1)
	e.acts = make([]layerActs, len(cfg.Layers))
	// Keep the attention probabilities when they fit the budget.
	var probBytes int64 // inference shares one layer's buffers
	for _, lc := range cfg.Layers {
		layer := int64(b) * int64(lc.Heads) * int64(t) * int64(t) * 4
		if e.opts.Inference {
			probBytes = max(probBytes, layer)
		} else {
			probBytes += layer
		}
	}
	budget := e.opts.AttentionBudget
	if budget == 0 {
		budget = DefaultAttentionBudget
	}
	e.keepProbs = probBytes <= budget
	attSize := func(heads int) int {
		if !e.keepProbs {
			return 0
		}
		return b * heads * t * t
	}
	if e.opts.Inference {
		// One set of buffers, sized for the widest layer, for all layers.
		var mq, mkv, mm, mh, mkvh int
		for _, lc := range cfg.Layers {
			mq, mkv, mm, mh = max(mq, lc.Heads*lc.HeadDim), max(mkv, lc.KVHeads*lc.HeadDim), max(mm, lc.MLP), max(mh, lc.Heads)
			mkvh = max(mkvh, lc.KVHeads)
		}
		shared := newLayerActs(cfg, n, d, mq, mkv, mm, attSize(mh), mh, mkvh)
		if ne, k, m, s := moeSizes(cfg); ne > 0 {
			shared.moe = newMoEActs(n, d, ne, k, m, s)
		}
		a, c := make([]float32, n*d), make([]float32, n*d)
		for l := range e.acts {
			e.acts[l] = shared
			e.resid[l] = a
			a, c = c, a
		}
		e.resid[len(cfg.Layers)] = a
	} else {
		for l, lc := range cfg.Layers {
			e.acts[l] = newLayerActs(cfg, n, d, lc.Heads*lc.HeadDim, lc.KVHeads*lc.HeadDim, lc.MLP, attSize(lc.Heads), lc.Heads, lc.KVHeads)
			if lc.MoE() {
				e.acts[l].moe = newMoEActs(n, d, lc.Experts, cfg.ExpertsPerToken, lc.ExpertMLP, lc.SharedMLP)
			}
			e.resid[l] = make([]float32, n*d)
		}
		e.resid[len(cfg.Layers)] = make([]float32, n*d)
	}
	e.lnf = make([]float32, n*d)
	e.rstdf = make([]float32, n)
	e.tokens = make([]int32, n)
	if !e.opts.Inference {
		var mq, mkv, mm int
		for _, lc := range cfg.Layers {
			mq, mkv, mm = max(mq, lc.Heads*lc.HeadDim), max(mkv, lc.KVHeads*lc.HeadDim), max(mm, lc.MLP)
		}
		s := &e.scratch
		s.dres, s.dln = make([]float32, n*d), make([]float32, n*d)
		s.dq, s.dao = make([]float32, n*mq), make([]float32, n*mq)
		s.dk, s.dv = make([]float32, n*mkv), make([]float32, n*mkv)
		s.dgate, s.dup, s.dact = make([]float32, n*mm), make([]float32, n*mm), make([]float32, n*mm)
		s.dqn, s.dkn, s.dpost = nil, nil, nil
		if cfg.QKNorm {
			s.dqn, s.dkn = make([]float32, n*mq), make([]float32, n*mkv)
		}
		if cfg.PostNorms {
			s.dpost = make([]float32, n*d)
		}
		e.dlnf = make([]float32, n*d)
	}
	e.scratch.att = make([][]float32, e.threads)
	e.scratch.probs, e.scratch.raw = nil, nil
	for i := range e.scratch.att {
		e.scratch.att[i] = make([]float32, t*t)
		if !e.keepProbs {
			e.scratch.probs = append(e.scratch.probs, make([]float32, t*t))
		}
		if cfg.AttnSoftCap > 0 && !e.opts.Inference {
			e.scratch.raw = append(e.scratch.raw, make([]float32, t*t))
		}
	}
}

// newLayerActs allocates one layer's activations: qd and kvd are the q and
// k/v widths, m the MLP width, att the kept probabilities' size, heads and
// kvHeads the head counts (for the q/k norms' statistics).
func newLayerActs(cfg *ir.Config, n, d, qd, kvd, m, att, heads, kvHeads int) layerActs {
	a := layerActs{
		ln1: make([]float32, n*d), q: make([]float32, n*qd), k: make([]float32, n*kvd), v: make([]float32, n*kvd),
		ao: make([]float32, n*qd), mid: make([]float32, n*d), ln2: make([]float32, n*d),
		gate: make([]float32, n*m), up: make([]float32, n*m), act: make([]float32, n*m),
		rstd1: make([]float32, n), rstd2: make([]float32, n), att: make([]float32, att),
	}
	if cfg.QKNorm {
		a.qraw, a.kraw = make([]float32, n*qd), make([]float32, n*kvd)
		a.rstdq, a.rstdk = make([]float32, n*heads), make([]float32, n*kvHeads)
	}
	if cfg.PostNorms {
		a.oout, a.dout = make([]float32, n*d), make([]float32, n*d)
		a.apn, a.mpn = make([]float32, n*d), make([]float32, n*d)
		a.rstdpa, a.rstdpm = make([]float32, n), make([]float32, n)
	}
	return a
}

// ropeTables caches per-layer cos/sin of every position up to t, computed
// in float64 from the config's inverse frequencies as the reference does.
func (e *Engine) ropeTables(t int) {
	if e.ropeT >= t && e.rope != nil {
		return
	}
	cfg := &e.P.Config
	e.rope = make([][]float32, len(cfg.Layers))
	cache := map[int][]float32{}
	for l, lc := range cfg.Layers {
		if tab, ok := cache[lc.HeadDim]; ok {
			e.rope[l] = tab
			continue
		}
		half := lc.HeadDim / 2
		inv := cfg.RopeInvFreq(lc.HeadDim)
		tab := make([]float32, t*lc.HeadDim)
		for pos := 0; pos < t; pos++ {
			for i := 0; i < half; i++ {
				angle := float64(pos) * inv[i]
				tab[pos*lc.HeadDim+i] = float32(math.Cos(angle))
				tab[pos*lc.HeadDim+half+i] = float32(math.Sin(angle))
			}
		}
		cache[lc.HeadDim] = tab
		e.rope[l] = tab
	}
	e.ropeT = t
}

// Forward runs B sequences of T tokens (tokens row-major [B, T]; every
// sequence starts at position 0) through the decoder and the final norm,
// keeping the activations for Loss, Logits and Backward.
func (e *Engine) Forward(tokens []int32, b, t int) error {
	cfg := &e.P.Config
	if b <= 0 || t <= 0 {
		return fmt.Errorf("engine: batch %d×%d must be positive", b, t)
	}
	if len(tokens) != b*t {
		return fmt.Errorf("engine: %d tokens for a batch of %d×%d", len(tokens), b, t)
	}
	if cfg.MaxSeq > 0 && t > cfg.MaxSeq {
		return fmt.Errorf("engine: sequence length %d exceeds the model's %d positions", t, cfg.MaxSeq)
	}
	for i, id := range tokens {
		if id < 0 || int(id) >= cfg.Vocab {
			return fmt.Errorf("engine: token %d (row %d, position %d) is %d, outside vocabulary of %d", i, i/t, i%t, id, cfg.Vocab)
		}
	}
	e.alloc(b, t)
	e.ropeTables(t)
	e.ready, e.gradOK = false, false
	if e.dlnf != nil {
		clear(e.dlnf)
	}
	e.aux = nil
	copy(e.tokens, tokens)
	d := cfg.Hidden
	x := e.resid[0]
	parallel.For(e.threads, e.n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			id := int(tokens[r])
			copy(x[r*d:(r+1)*d], e.P.Embed[id*d:(id+1)*d])
		}
	})
	if sc := e.embedScale(); sc != 1 {
		parallel.For(e.threads, e.n, func(lo, hi int) {
			blas.Sscal(sc, x[lo*d:hi*d])
		})
	}
	for l := range e.P.Layers {
		if e.skipped(l) {
			copy(e.resid[l+1], e.resid[l])
			continue
		}
		if err := e.layerForward(l); err != nil {
			return err
		}
	}
	rmsnormForward(e.threads, e.lnf, e.rstdf, e.resid[len(e.P.Layers)], e.normW(e.P.FinalNorm), e.n, d, cfg.NormEps)
	e.ready = true
	return nil
}

// embedScale is the factor on looked-up embeddings: √hidden rounded to
// float32 as Hugging Face's Gemma computes it, or 1.
func (e *Engine) embedScale() float32 {
	if !e.P.Config.EmbedScale {
		return 1
	}
	return float32(math.Sqrt(float64(e.P.Config.Hidden)))
}

// normW is the weight a norm applies: w itself, or NormOffset + w (Gemma's
// 1 + w, in float32 as Hugging Face computes it). The gradient with
// respect to w equals the one with respect to the applied weight.
func (e *Engine) normW(w []float32) []float32 {
	off := float32(e.P.Config.NormOffset)
	if off == 0 {
		return w
	}
	out := make([]float32, len(w))
	for i, v := range w {
		out[i] = off + v
	}
	return out
}

// addBias adds b to each of the n rows of y when b is not nil.
func addBias(threads int, y, b []float32, n int) {
	if b == nil {
		return
	}
	w := len(b)
	parallel.For(threads, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := y[r*w : (r+1)*w]
			for i, v := range b {
				row[i] += v
			}
		}
	})
}

// addRows sets dst = x + y for n rows of d, split across goroutines.
func addRows(threads int, dst, x, y []float32, n, d int) {
	parallel.For(threads, n, func(lo, hi int) {
		dd, xx, yy := dst[lo*d:hi*d], x[lo*d:hi*d], y[lo*d:hi*d]
		for i, v := range xx {
			dd[i] = v + yy[i]
		}
	})
}

func (e *Engine) layerForward(l int) error {
	p := &e.P.Layers[l]
	a := &e.acts[l]
	cfg := &e.P.Config
	n, d := e.n, cfg.Hidden
	hd := p.HeadDim
	qd, kvd := p.Heads*hd, p.KVHeads*hd
	x := e.resid[l]

	rmsnormForward(e.threads, a.ln1, a.rstd1, x, e.normW(p.AttnNorm), n, d, cfg.NormEps)
	q, k := a.q, a.k
	if p.QNorm != nil {
		q, k = a.qraw[:n*qd], a.kraw[:n*kvd]
	}
	e.proj(l, ir.RoleQ, q, a.ln1, p.Q, n, qd, d, 0)
	e.proj(l, ir.RoleK, k, a.ln1, p.K, n, kvd, d, 0)
	e.proj(l, ir.RoleV, a.v, a.ln1, p.V, n, kvd, d, 0)
	addBias(e.threads, q, p.QBias, n)
	addBias(e.threads, k, p.KBias, n)
	addBias(e.threads, a.v, p.VBias, n)
	if p.QNorm != nil {
		// Per head: rows of head_dim, one weight shared by the heads.
		rmsnormForward(e.threads, a.q, a.rstdq, q, e.normW(p.QNorm), n*p.Heads, hd, cfg.NormEps)
		rmsnormForward(e.threads, a.k, a.rstdk, k, e.normW(p.KNorm), n*p.KVHeads, hd, cfg.NormEps)
	}
	tab := e.rope[l]
	parallel.For(e.threads, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			pos := r % e.t
			c := tab[pos*hd : pos*hd+hd/2]
			s := tab[pos*hd+hd/2 : (pos+1)*hd]
			ropeRow(a.q[r*qd:(r+1)*qd], hd, c, s, false)
			ropeRow(a.k[r*kvd:(r+1)*kvd], hd, c, s, false)
		}
	})
	e.attentionForward(p, a)
	if p.AttnPostNorm != nil {
		e.proj(l, ir.RoleO, a.oout, a.ao, p.O, n, d, qd, 0)
		rmsnormForward(e.threads, a.apn, a.rstdpa, a.oout, e.normW(p.AttnPostNorm), n, d, cfg.NormEps)
		addRows(e.threads, a.mid, x, a.apn, n, d)
	} else {
		copy(a.mid, x)
		e.proj(l, ir.RoleO, a.mid, a.ao, p.O, n, d, qd, 1)
	}

	rmsnormForward(e.threads, a.ln2, a.rstd2, a.mid, e.normW(p.MLPNorm), n, d, cfg.NormEps)
	out := e.resid[l+1]
	switch {
	case p.MoE() && p.MLPPostNorm != nil:
		e.moeForward(l, p, a.moe, a.ln2, a.dout, 0)
	case p.MoE():
		copy(out, a.mid)
		e.moeForward(l, p, a.moe, a.ln2, out, 1)
	default:
		e.proj(l, ir.RoleGate, a.gate, a.ln2, p.Gate, n, p.MLP, d, 0)
		e.proj(l, ir.RoleUp, a.up, a.ln2, p.Up, n, p.MLP, d, 0)
		e.gluForward(a.act, a.gate, a.up, n, p.MLP)
		if p.MLPPostNorm != nil {
			e.proj(l, ir.RoleDown, a.dout, a.act, p.Down, n, d, p.MLP, 0)
		} else {
			copy(out, a.mid)
			e.proj(l, ir.RoleDown, out, a.act, p.Down, n, d, p.MLP, 1)
		}
	}
	if p.MLPPostNorm != nil {
		rmsnormForward(e.threads, a.mpn, a.rstdpm, a.dout, e.normW(p.MLPPostNorm), n, d, cfg.NormEps)
		addRows(e.threads, out, a.mid, a.mpn, n, d)
	}

	if e.opts.OnLayer != nil {
		// Inference buffers are sized for the widest layer: trim them.
		view := Activations{
			Input: x, AttnNormOut: a.ln1, AttnOut: a.ao[:n*qd], Mid: a.mid,
			MLPNormOut: a.ln2, MLPAct: a.act[:n*p.MLP], Output: out,
			AttnPostNormOut: a.apn, MLPPostNormOut: a.mpn,
		}
		if p.MoE() {
			view.MoE = a.moe.view(p, cfg.ExpertsPerToken, n, d)
		}
		if err := e.opts.OnLayer(l, &view); err != nil {
			return fmt.Errorf("engine: layer %d hook: %w", l, err)
		}
	}
	return nil
}

// linear computes y = x·Wᵀ + beta·y for x [n, in] and W [out, in].
func (e *Engine) linear(y, x, w []float32, n, out, in int, beta float32) {
	blas.SgemmThreads(e.threads, false, true, n, out, in, 1, x, in, w, in, beta, y, out)
}

// Logits writes the logits of rows [r0, r1) of the last Forward (row
// b·T+t predicts the token after position t of sequence b) into dst,
// (r1-r0)·Vocab floats.
func (e *Engine) Logits(r0, r1 int, dst []float32) error {
	if !e.ready {
		return fmt.Errorf("engine: Logits before Forward")
	}
	v, d := e.P.Config.Vocab, e.P.Config.Hidden
	if r0 < 0 || r1 > e.n || r0 > r1 {
		return fmt.Errorf("engine: logit rows [%d, %d) outside the %d rows of the batch", r0, r1, e.n)
	}
	if len(dst) < (r1-r0)*v {
		return fmt.Errorf("engine: logits buffer holds %d floats, rows [%d, %d) need %d", len(dst), r0, r1, (r1-r0)*v)
	}
	if r0 == r1 {
		return nil
	}
	e.project(e.lnf[r0*d:], r1-r0, dst)
	return nil
}

// project writes the logits of m final-norm rows x into dst: x·Wᵀ through
// the classifier, soft-capped when the config caps logits. Every logit the
// engine produces or differentiates comes from here.
func (e *Engine) project(x []float32, m int, dst []float32) {
	v, d := e.P.Config.Vocab, e.P.Config.Hidden
	blas.SgemmThreads(e.threads, false, true, m, v, d, 1, x, d, e.P.classifier(), d, 0, dst, v)
	if c := e.P.Config.FinalSoftCap; c > 0 {
		parallel.For(e.threads, m, func(lo, hi int) {
			softCap(dst[lo*v:hi*v], c)
		})
	}
}

// FinalHidden is the final norm's output of the last Forward, [N, hidden].
func (e *Engine) FinalHidden() []float32 { return e.lnf }

func (e *Engine) lossChunk() int {
	c := e.opts.LossChunk
	if c <= 0 {
		c = max(256, (32<<20)/e.P.Config.Vocab)
	}
	return min(c, e.n)
}
