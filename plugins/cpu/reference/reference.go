// Package reference is a plain, single-token-at-a-time forward pass of the
// IR's decoder families in float32, written for clarity the way llama2.c's
// run.c is, with a KV cache. Besides Llama's computation it implements
// every family option of ir.Config (Qwen2's q/k/v biases, Qwen3's q/k
// norms, Gemma 2's norm offset, embedding scale, GeGLU, post norms,
// attention scalar, soft caps and sliding windows) and mixture-of-experts
// layers (Mixtral, Qwen2-MoE, Qwen3-MoE). It is the ground truth
// that faster backends are tested against and what `whittle generate` uses
// for small models.
package reference

import (
	"fmt"
	"math"
	"slices"

	"github.com/whittle-ml/whittle/ir"
)

// Layer holds one decoder layer's weights as float32, [out, in] row-major.
// The weights of options the family lacks are nil.
type Layer struct {
	ir.LayerConfig
	AttnNorm, Q, K, V, O []float32
	QBias, KBias, VBias  []float32 // AttnBias
	QNorm, KNorm         []float32 // QKNorm: [head_dim], shared by the heads
	AttnPostNorm         []float32 // PostNorms
	// MLPNorm is the MLP's input norm (Gemma 2's pre_feedforward_layernorm).
	MLPNorm, Gate, Up, Down []float32
	MLPPostNorm             []float32 // PostNorms

	// A mixture-of-experts layer has a router [experts, hidden] and the
	// experts stacked along dimension 0 instead of Gate, Up, Down, and
	// optionally a shared expert with its sigmoid gate [hidden].
	Router                                    []float32
	ExpertGate, ExpertUp, ExpertDown          []float32
	SharedGate, SharedUp, SharedDown, SharedW []float32
}

// Model is a decoded copy of an ir.Model's weights.
type Model struct {
	Config     ir.Config
	Embed      []float32
	Layers     []Layer
	FinalNorm  []float32
	Classifier []float32 // aliases Embed when tied
	invFreq    [][]float64
}

// Load decodes every tensor of m into float32.
func Load(m *ir.Model) (*Model, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// get reads a tensor; the empty name (an option the family lacks)
	// reads as nil.
	get := func(name string) ([]float32, error) {
		if name == "" {
			return nil, nil
		}
		t, err := m.Tensor(name)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		return v, nil
	}
	r := &Model{Config: m.Config.Clone()}
	var err error
	if r.Embed, err = get(ir.NameEmbed); err != nil {
		return nil, err
	}
	if r.FinalNorm, err = get(ir.NameFinalNorm); err != nil {
		return nil, err
	}
	if m.Config.Tied {
		r.Classifier = r.Embed
	} else if r.Classifier, err = get(ir.NameClassifier); err != nil {
		return nil, err
	}
	for i, lc := range m.Config.Layers {
		l := Layer{LayerConfig: lc}
		n := m.Config.LayerTensors(i)
		for _, f := range []struct {
			dst  *[]float32
			name string
		}{{&l.AttnNorm, n.AttnNorm}, {&l.Q, n.Q}, {&l.K, n.K}, {&l.V, n.V}, {&l.O, n.O},
			{&l.QBias, n.QBias}, {&l.KBias, n.KBias}, {&l.VBias, n.VBias}, {&l.QNorm, n.QNorm}, {&l.KNorm, n.KNorm},
			{&l.AttnPostNorm, n.AttnPostNorm}, {&l.MLPNorm, n.MLPNorm}, {&l.Gate, n.Gate}, {&l.Up, n.Up},
			{&l.Down, n.Down}, {&l.MLPPostNorm, n.MLPPostNorm}, {&l.Router, n.Router},
			{&l.ExpertGate, n.ExpertGate}, {&l.ExpertUp, n.ExpertUp}, {&l.ExpertDown, n.ExpertDown},
			{&l.SharedGate, n.SharedGate}, {&l.SharedUp, n.SharedUp}, {&l.SharedDown, n.SharedDown},
			{&l.SharedW, n.SharedExpertGate}} {
			if *f.dst, err = get(f.name); err != nil {
				return nil, err
			}
		}
		r.Layers = append(r.Layers, l)
		r.invFreq = append(r.invFreq, r.Config.RopeInvFreq(lc.HeadDim))
	}
	return r, nil
}

// Session is one sequence being decoded, with its KV cache.
type Session struct {
	m        *Model
	kc, vc   [][]float32 // per layer: [pos][kvHeads*headDim]
	pos      int
	x, xb    []float32
	logits   []float32
	maxCache int
}

// NewSession starts an empty sequence of at most maxLen positions
// (0 means the model's max sequence length).
func (m *Model) NewSession(maxLen int) *Session {
	if maxLen <= 0 {
		maxLen = m.Config.MaxSeq
	}
	s := &Session{m: m, maxCache: maxLen}
	s.kc = make([][]float32, len(m.Layers))
	s.vc = make([][]float32, len(m.Layers))
	s.x = make([]float32, m.Config.Hidden)
	s.xb = make([]float32, m.Config.Hidden)
	s.logits = make([]float32, m.Config.Vocab)
	return s
}

// Pos is the number of tokens consumed so far.
func (s *Session) Pos() int { return s.pos }

// Forward consumes one token at the next position and returns the logits
// for the following one. The slice is reused by the next call.
func (s *Session) Forward(token int) ([]float32, error) {
	m := s.m
	c := &m.Config
	if token < 0 || token >= c.Vocab {
		return nil, fmt.Errorf("token id %d outside vocabulary of %d", token, c.Vocab)
	}
	if s.maxCache > 0 && s.pos >= s.maxCache {
		return nil, fmt.Errorf("sequence longer than %d positions", s.maxCache)
	}
	d := c.Hidden
	off := float32(c.NormOffset)
	copy(s.x, m.Embed[token*d:(token+1)*d])
	if c.EmbedScale {
		// Gemma's normalizer, a float32 constant as in Hugging Face.
		scale := float32(math.Sqrt(float64(d)))
		for i := range s.x {
			s.x[i] *= scale
		}
	}
	for li := range m.Layers {
		l := &m.Layers[li]
		hd := l.HeadDim
		qd, kvd := l.Heads*hd, l.KVHeads*hd
		rmsnorm(s.xb, s.x, l.AttnNorm, off, c.NormEps)
		q := make([]float32, qd)
		k := make([]float32, kvd)
		v := make([]float32, kvd)
		matvec(q, l.Q, s.xb)
		matvec(k, l.K, s.xb)
		matvec(v, l.V, s.xb)
		addTo(q, l.QBias)
		addTo(k, l.KBias)
		addTo(v, l.VBias)
		if l.QNorm != nil {
			for h := 0; h < qd; h += hd {
				rmsnorm(q[h:h+hd], q[h:h+hd], l.QNorm, off, c.NormEps)
			}
			for h := 0; h < kvd; h += hd {
				rmsnorm(k[h:h+hd], k[h:h+hd], l.KNorm, off, c.NormEps)
			}
		}
		rope(q, hd, s.pos, m.invFreq[li])
		rope(k, hd, s.pos, m.invFreq[li])
		s.kc[li] = append(s.kc[li], k...)
		s.vc[li] = append(s.vc[li], v...)
		// The window keeps positions first..pos (pos-Window < t); the
		// cache keeps everything, which small models can afford.
		first := 0
		if l.Window > 0 {
			first = max(0, s.pos-l.Window+1)
		}
		att := make([]float32, qd)
		scores := make([]float32, s.pos+1-first)
		// Scores are divided, as run.c divides by sqrtf(head_size), so
		// that Llama's output stays llama2.c's bit for bit.
		div := float32(1 / c.AttnScale(hd))
		for h := 0; h < l.Heads; h++ {
			g := h / l.GroupSize()
			qh := q[h*hd : (h+1)*hd]
			for t := first; t <= s.pos; t++ {
				kt := s.kc[li][t*kvd+g*hd : t*kvd+(g+1)*hd]
				var dot float32
				for i := range qh {
					dot += qh[i] * kt[i]
				}
				scores[t-first] = dot / div
			}
			if c.AttnSoftCap > 0 {
				softCap(scores, c.AttnSoftCap)
			}
			softmax(scores)
			out := att[h*hd : (h+1)*hd]
			for t := first; t <= s.pos; t++ {
				vt := s.vc[li][t*kvd+g*hd : t*kvd+(g+1)*hd]
				for i := range out {
					out[i] += scores[t-first] * vt[i]
				}
			}
		}
		o := make([]float32, d)
		matvec(o, l.O, att)
		if l.AttnPostNorm != nil {
			rmsnorm(o, o, l.AttnPostNorm, off, c.NormEps)
		}
		addTo(s.x, o)
		rmsnorm(s.xb, s.x, l.MLPNorm, off, c.NormEps)
		if l.MoE() {
			m.moe(o, l, s.xb)
		} else {
			m.mlp(o, l.Gate, l.Up, l.Down, l.MLP, s.xb)
		}
		if l.MLPPostNorm != nil {
			rmsnorm(o, o, l.MLPPostNorm, off, c.NormEps)
		}
		addTo(s.x, o)
	}
	rmsnorm(s.xb, s.x, m.FinalNorm, off, c.NormEps)
	matvec(s.logits, m.Classifier, s.xb)
	if c.FinalSoftCap > 0 {
		softCap(s.logits, c.FinalSoftCap)
	}
	s.pos++
	return s.logits, nil
}

// mlp writes the gated MLP down(act(gate·x) ⊙ up·x) of width neurons to
// out.
func (m *Model) mlp(out, gate, up, down []float32, width int, x []float32) {
	g := make([]float32, width)
	u := make([]float32, width)
	matvec(g, gate, x)
	matvec(u, up, x)
	act := silu
	if m.Config.Activation() == ir.ActGELUTanh {
		act = geluTanh
	}
	for i := range g {
		g[i] = act(g[i]) * u[i]
	}
	matvec(out, down, g)
}

// moe writes a mixture of experts' output to out: the router's softmax
// over all experts, the top-k experts (probabilities renormalized to sum
// to 1 with NormTopK), their weighted outputs, plus the shared expert's
// times sigmoid(shared gate·x) — Mixtral's and Qwen-MoE's sparse block.
func (m *Model) moe(out []float32, l *Layer, x []float32) {
	d, f := m.Config.Hidden, l.ExpertMLP
	probs := make([]float32, l.Experts)
	matvec(probs, l.Router, x)
	softmax(probs)
	chosen := make([]int, 0, m.Config.ExpertsPerToken)
	var sum float32
	for range m.Config.ExpertsPerToken {
		best := -1
		for e, p := range probs {
			if !slices.Contains(chosen, e) && (best < 0 || p > probs[best]) {
				best = e
			}
		}
		chosen = append(chosen, best)
		sum += probs[best]
	}
	clear(out)
	o := make([]float32, d)
	for _, e := range chosen {
		w := probs[e]
		if m.Config.NormTopK {
			w /= sum
		}
		m.mlp(o, l.ExpertGate[e*f*d:(e+1)*f*d], l.ExpertUp[e*f*d:(e+1)*f*d], l.ExpertDown[e*d*f:(e+1)*d*f], f, x)
		for i, v := range o {
			out[i] += w * v
		}
	}
	if l.SharedMLP > 0 {
		m.mlp(o, l.SharedGate, l.SharedUp, l.SharedDown, l.SharedMLP, x)
		var z float32
		for i, v := range x {
			z += l.SharedW[i] * v
		}
		w := 1 / (1 + float32(math.Exp(float64(-z))))
		for i, v := range o {
			out[i] += w * v
		}
	}
}

// rmsnorm writes x/rms(x)·(offset + w) to out, which may be x; offset is
// Gemma's 1 (its stored weights are deviations from 1), else 0.
func rmsnorm(out, x, w []float32, offset float32, eps float64) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	ss = ss/float32(len(x)) + float32(eps)
	inv := 1 / float32(math.Sqrt(float64(ss)))
	for i := range out {
		out[i] = (offset + w[i]) * (inv * x[i])
	}
}

// addTo adds b (nil: nothing) to a.
func addTo(a, b []float32) {
	for i, v := range b {
		a[i] += v
	}
}

// softCap applies Gemma 2's cap·tanh(x/cap) in place.
func softCap(x []float32, c float64) {
	for i, v := range x {
		x[i] = float32(c * math.Tanh(float64(v)/c))
	}
}

// matvec computes out = W·x for W of shape [len(out), len(x)].
func matvec(out, w, x []float32) {
	n := len(x)
	for i := range out {
		row := w[i*n : (i+1)*n]
		var sum float32
		for j, v := range row {
			sum += v * x[j]
		}
		out[i] = sum
	}
}

// rope rotates each head's dimension pairs (i, i+hd/2), Hugging Face's order.
func rope(v []float32, hd, pos int, invFreq []float64) {
	half := hd / 2
	for h := 0; h < len(v)/hd; h++ {
		x := v[h*hd : (h+1)*hd]
		for i := 0; i < half; i++ {
			angle := float64(pos) * invFreq[i]
			cos, sin := float32(math.Cos(angle)), float32(math.Sin(angle))
			a, b := x[i], x[i+half]
			x[i] = a*cos - b*sin
			x[i+half] = a*sin + b*cos
		}
	}
}

func softmax(x []float32) {
	maxv := x[0]
	for _, v := range x[1:] {
		if v > maxv {
			maxv = v
		}
	}
	var sum float32
	for i, v := range x {
		x[i] = float32(math.Exp(float64(v - maxv)))
		sum += x[i]
	}
	for i := range x {
		x[i] /= sum
	}
}

func silu(x float32) float32 { return x / (1 + float32(math.Exp(float64(-x)))) }

// geluTanh is GELU's tanh approximation (PyTorch's approximate="tanh").
func geluTanh(x float32) float32 {
	f := float64(x)
	return float32(0.5 * f * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(f+0.044715*f*f*f))))
}

// NLL returns the summed negative log-likelihood (nats) of tokens[1:] given
// their prefixes, and how many tokens were scored.
func (m *Model) NLL(tokens []int) (float64, int, error) {
	s := m.NewSession(len(tokens))
	var sum float64
	for i := 0; i+1 < len(tokens); i++ {
		logits, err := s.Forward(tokens[i])
		if err != nil {
			return 0, 0, err
		}
		sum += logSoftmaxAt(logits, tokens[i+1])
	}
	return sum, max(len(tokens)-1, 0), nil
}

func logSoftmaxAt(logits []float32, target int) float64 {
	maxv := float64(logits[0])
	for _, v := range logits {
		maxv = math.Max(maxv, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - maxv)
	}
	return -(float64(logits[target]) - maxv - math.Log(sum))
}
