// Package decoder64 is an independent float64 implementation of the
// decoder families whittle's IR describes (Llama: RMSNorm, grouped-query
// attention with RoPE in Hugging Face's half order, SwiGLU MLP; and every
// family option of ir.Config: Qwen2's q/k/v biases, Qwen3's q/k norms,
// Gemma 2's norm offset, embedding scale, GeGLU, post norms, attention
// scalar, soft caps and sliding windows; mixtures of experts as Mixtral,
// Qwen2-MoE and Qwen3-MoE route them), written one position at a time
// for clarity from the Hugging Face model definitions. It shares no code
// with the engines, so tests use it as the ground truth they compare a
// backend, the CPU engine's gradients and its statistics with.
package decoder64

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// Model is a decoder with float64 weights.
type Model struct {
	Config ir.Config
	// W holds the weights by tensor name; a tied model has no classifier
	// entry (Classifier is the embedding).
	W   map[string][]float64
	inv [][]float64 // per layer: RoPE inverse frequencies
}

// New makes a model of cfg from weights by tensor name, which it keeps.
func New(cfg ir.Config, w map[string][]float64) *Model {
	g := &Model{Config: cfg.Clone(), W: w}
	for _, lc := range g.Config.Layers {
		g.inv = append(g.inv, g.Config.RopeInvFreq(lc.HeadDim))
	}
	return g
}

// Load widens every tensor of m to float64.
func Load(m *ir.Model) (*Model, error) {
	w := map[string][]float64{}
	for _, name := range m.TensorNames() {
		t, err := m.Tensor(name)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		if err != nil {
			return nil, fmt.Errorf("decoder64: tensor %s: %w", name, err)
		}
		f := make([]float64, len(v))
		for i, x := range v {
			f[i] = float64(x)
		}
		w[name] = f
	}
	return New(m.Config, w), nil
}

// Clone copies the weights (for finite differences that perturb them).
func (g *Model) Clone() *Model {
	c := &Model{Config: g.Config.Clone(), W: map[string][]float64{}, inv: g.inv}
	for k, v := range g.W {
		c.W[k] = slices.Clone(v)
	}
	return c
}

// Classifier is the output projection [vocab, hidden].
func (g *Model) Classifier() []float64 {
	if g.Config.Tied {
		return g.W[ir.NameEmbed]
	}
	return g.W[ir.NameClassifier]
}

// LayerActs are one layer's activations, per position: its input, the
// outputs of its attention and MLP input norms (for Gemma 2 the MLP's is
// pre_feedforward_layernorm), the attention's output (the input of
// o_proj, heads side by side), the MLP's activation (the input of
// down_proj) and the layer's output. With PostNorms, AttnPostNormOut and
// MLPPostNormOut are what the attention and the MLP add to the residual
// stream (the outputs of Gemma 2's post norms); they are nil otherwise.
type LayerActs struct {
	In, AttnNormOut, AttnOut, MLPNormOut, MLPAct, Out [][]float64
	AttnPostNormOut, MLPPostNormOut                   [][]float64
	// MoE holds, in a mixture-of-experts layer, each position's routing
	// and expert activations (MLPAct is then nil).
	MoE []MoEActs
}

// embedScale is the factor embeddings are multiplied by with
// Config.EmbedScale: √hidden rounded to float32, as the IR defines it
// (Hugging Face's Gemma computes the normalizer in the activation dtype,
// float32 here), so that this reference is the model the engines run and
// not a neighbour 1e-8 away from it.
func embedScale(hidden int) float64 { return float64(float32(math.Sqrt(float64(hidden)))) }

// Forward returns the logits after every position of tokens, with the
// layers in skip bypassed (the residual stream passes through); with acts
// non-nil (one per layer) it also records each computed layer's
// activations.
func (g *Model) Forward(tokens []int, skip map[int]bool, acts []LayerActs) [][]float64 {
	cfg := &g.Config
	d := cfg.Hidden
	T := len(tokens)
	emb := g.W[ir.NameEmbed]
	x := make([][]float64, T)
	for t, id := range tokens {
		x[t] = slices.Clone(emb[id*d : (id+1)*d])
		if cfg.EmbedScale {
			scale(x[t], embedScale(d))
		}
	}
	norm := func(v []float64, name string) []float64 {
		return rmsNorm(v, g.W[name], cfg.NormOffset, cfg.NormEps)
	}
	for l, lc := range cfg.Layers {
		if skip[l] {
			continue
		}
		n := cfg.LayerTensors(l)
		hd, H, KV := lc.HeadDim, lc.Heads, lc.KVHeads
		var rec *LayerActs
		if acts != nil {
			rec = &acts[l]
			rec.In = cloneRows(x)
			rec.MoE = nil
		}
		h := make([][]float64, T)
		q := make([][]float64, T)
		k := make([][]float64, T)
		v := make([][]float64, T)
		for t := range x {
			h[t] = norm(x[t], n.AttnNorm)
			q[t] = g.linear(n.Q, n.QBias, h[t], H*hd)
			k[t] = g.linear(n.K, n.KBias, h[t], KV*hd)
			v[t] = g.linear(n.V, n.VBias, h[t], KV*hd)
			if cfg.QKNorm {
				// Qwen3: each head is normalized over head_dim with
				// one weight shared by the heads, before RoPE.
				for hh := 0; hh < H; hh++ {
					copy(q[t][hh*hd:], norm(q[t][hh*hd:(hh+1)*hd], n.QNorm))
				}
				for hh := 0; hh < KV; hh++ {
					copy(k[t][hh*hd:], norm(k[t][hh*hd:(hh+1)*hd], n.KNorm))
				}
			}
			rope(q[t], hd, t, g.inv[l])
			rope(k[t], hd, t, g.inv[l])
		}
		a := make([][]float64, T)
		sc := cfg.AttnScale(hd)
		group := H / KV
		for t := range x {
			a[t] = make([]float64, H*hd)
			// Keys j with t-Window < j <= t; all of 0..t without a window.
			first := 0
			if lc.Window > 0 {
				first = max(0, t-lc.Window+1)
			}
			for hh := 0; hh < H; hh++ {
				kvh := hh / group
				qv := q[t][hh*hd : (hh+1)*hd]
				w := make([]float64, t+1-first)
				mx := math.Inf(-1)
				for j := range w {
					s := Dot(qv, k[first+j][kvh*hd:(kvh+1)*hd]) * sc
					if cfg.AttnSoftCap > 0 {
						s = softCap(s, cfg.AttnSoftCap)
					}
					w[j] = s
					mx = math.Max(mx, s)
				}
				var sum float64
				for j := range w {
					w[j] = math.Exp(w[j] - mx)
					sum += w[j]
				}
				out := a[t][hh*hd : (hh+1)*hd]
				for j := range w {
					p := w[j] / sum
					for i := range out {
						out[i] += p * v[first+j][kvh*hd+i]
					}
				}
			}
		}
		h2 := make([][]float64, T)
		var mact [][]float64
		if !lc.MoE() {
			mact = make([][]float64, T)
		}
		var aPost, mPost [][]float64
		if cfg.PostNorms {
			aPost, mPost = make([][]float64, T), make([][]float64, T)
		}
		for t := range x {
			o := matVec(g.W[n.O], a[t], d)
			if cfg.PostNorms {
				o = norm(o, n.AttnPostNorm)
				aPost[t] = o
			}
			add(x[t], o)
			h2[t] = norm(x[t], n.MLPNorm)
			var dn []float64
			if lc.MoE() {
				var r MoEActs
				dn, r = g.moe(n, lc, h2[t])
				if rec != nil {
					rec.MoE = append(rec.MoE, r)
				}
			} else {
				dn, mact[t] = g.mlp(n.Gate, n.Up, n.Down, lc.MLP, h2[t])
			}
			if cfg.PostNorms {
				dn = norm(dn, n.MLPPostNorm)
				mPost[t] = dn
			}
			add(x[t], dn)
		}
		if rec != nil {
			rec.AttnNormOut, rec.AttnOut, rec.MLPNormOut, rec.MLPAct = h, a, h2, mact
			rec.AttnPostNormOut, rec.MLPPostNormOut = aPost, mPost
			rec.Out = cloneRows(x)
		}
	}
	cls := g.Classifier()
	logits := make([][]float64, T)
	for t := range x {
		logits[t] = matVec(cls, norm(x[t], ir.NameFinalNorm), cfg.Vocab)
		if cfg.FinalSoftCap > 0 {
			for i, z := range logits[t] {
				logits[t][i] = softCap(z, cfg.FinalSoftCap)
			}
		}
	}
	return logits
}

// mlp is a gated MLP of width neurons: down(act(gate·x) ⊙ up·x), and the
// activation (the input of down).
func (g *Model) mlp(gate, up, down string, width int, x []float64) (out, a []float64) {
	return g.mlpW(g.W[gate], g.W[up], g.W[down], width, x)
}

func (g *Model) mlpW(gate, up, down []float64, width int, x []float64) (out, a []float64) {
	gv := matVec(gate, x, width)
	uv := matVec(up, x, width)
	a = make([]float64, width)
	for i := range gv {
		a[i] = act(g.Config.Activation(), gv[i]) * uv[i]
	}
	return matVec(down, a, g.Config.Hidden), a
}

// MoEActs are one position's activations in a mixture-of-experts layer.
type MoEActs struct {
	// Probs is the router's softmax over all experts.
	Probs []float64
	// Chosen are the top-k experts in descending probability, Weights
	// the factors their outputs are summed with (renormalized under
	// NormTopK).
	Chosen  []int
	Weights []float64
	// ExpertAct[e] is expert e's activation (the input of its down
	// projection) when it was chosen, else nil; ExpertOut[e] its output
	// before weighting.
	ExpertAct, ExpertOut [][]float64
	// SharedAct is the shared expert's activation and SharedGate the
	// sigmoid factor on its output (nil and 0 without a shared expert).
	SharedAct  []float64
	SharedGate float64
}

// moe is a mixture-of-experts MLP as transformers' MixtralSparseMoeBlock,
// Qwen2MoeSparseMoeBlock and Qwen3MoeSparseMoeBlock compute it: softmax
// of the router logits over all experts, the top-k probabilities
// (renormalized to sum to 1 with norm_topk_prob; Mixtral always does),
// the chosen experts' outputs summed with those weights, plus the shared
// expert's output times sigmoid(shared_expert_gate·x).
func (g *Model) moe(n ir.LayerTensors, lc ir.LayerConfig, x []float64) ([]float64, MoEActs) {
	d, E, F := g.Config.Hidden, lc.Experts, lc.ExpertMLP
	r := MoEActs{ExpertAct: make([][]float64, E), ExpertOut: make([][]float64, E)}
	logits := matVec(g.W[n.Router], x, E)
	mx := slices.Max(logits)
	r.Probs = make([]float64, E)
	var sum float64
	for e, z := range logits {
		r.Probs[e] = math.Exp(z - mx)
		sum += r.Probs[e]
	}
	scale(r.Probs, 1/sum)
	order := make([]int, E)
	for e := range order {
		order[e] = e
	}
	// Stable: among equal probabilities the lower expert wins.
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(r.Probs[b], r.Probs[a]) })
	r.Chosen = order[:g.Config.ExpertsPerToken]
	var wsum float64
	for _, e := range r.Chosen {
		r.Weights = append(r.Weights, r.Probs[e])
		wsum += r.Probs[e]
	}
	if g.Config.NormTopK {
		scale(r.Weights, 1/wsum)
	}
	out := make([]float64, d)
	gate, up, down := g.W[n.ExpertGate], g.W[n.ExpertUp], g.W[n.ExpertDown]
	for i, e := range r.Chosen {
		o, a := g.mlpW(gate[e*F*d:(e+1)*F*d], up[e*F*d:(e+1)*F*d], down[e*d*F:(e+1)*d*F], F, x)
		r.ExpertAct[e], r.ExpertOut[e] = a, slices.Clone(o)
		scale(o, r.Weights[i])
		add(out, o)
	}
	if lc.SharedMLP > 0 {
		o, a := g.mlp(n.SharedGate, n.SharedUp, n.SharedDown, lc.SharedMLP, x)
		r.SharedAct = a
		r.SharedGate = 1 / (1 + math.Exp(-Dot(g.W[n.SharedExpertGate], x)))
		scale(o, r.SharedGate)
		add(out, o)
	}
	return out, r
}

// linear is W·x (+ b when bias names one).
func (g *Model) linear(weight, bias string, x []float64, rows int) []float64 {
	out := matVec(g.W[weight], x, rows)
	if bias != "" {
		add(out, g.W[bias])
	}
	return out
}

func cloneRows(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i, r := range x {
		out[i] = slices.Clone(r)
	}
	return out
}

func add(dst, v []float64) {
	for i := range dst {
		dst[i] += v[i]
	}
}

func scale(v []float64, s float64) {
	for i := range v {
		v[i] *= s
	}
}

// rmsNorm is x/rms(x)·(offset + w): offset is 1 for Gemma's norms, whose
// stored weights are deviations from 1.
func rmsNorm(x, w []float64, offset, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = v * r * (offset + w[i])
	}
	return out
}

// softCap is Gemma 2's cap·tanh(x/cap).
func softCap(x, c float64) float64 { return c * math.Tanh(x/c) }

// act is the gated MLP's activation of the gate.
func act(name string, x float64) float64 {
	if name == ir.ActGELUTanh {
		// GELU's tanh approximation (PyTorch's approximate="tanh").
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}
	return x / (1 + math.Exp(-x))
}

// matVec is W·x for W [rows, len(x)] row-major.
func matVec(w, x []float64, rows int) []float64 {
	n := len(x)
	out := make([]float64, rows)
	for r := range out {
		out[r] = Dot(w[r*n:(r+1)*n], x)
	}
	return out
}

// Dot is the dot product of a and b.
func Dot(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// rope rotates each head of v in Hugging Face's half order: dimension i
// pairs with i + hd/2.
func rope(v []float64, hd, pos int, inv []float64) {
	half := hd / 2
	for h := 0; h < len(v)/hd; h++ {
		x := v[h*hd : (h+1)*hd]
		for i := 0; i < half; i++ {
			c, s := math.Cos(float64(pos)*inv[i]), math.Sin(float64(pos)*inv[i])
			a, b := x[i], x[i+half]
			x[i], x[i+half] = a*c-b*s, b*c+a*s
		}
	}
}
