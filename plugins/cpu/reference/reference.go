// Package reference is a plain, single-token-at-a-time forward pass of the
// IR's decoder family in float32, written for clarity the way llama2.c's
// run.c is. It is the ground truth that faster backends are tested against
// and what `whittle generate` uses for small models.
package reference

import (
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/ir"
)

// Layer holds one decoder layer's weights as float32, [out, in] row-major.
type Layer struct {
	ir.LayerConfig
	AttnNorm, Q, K, V, O    []float32
	MLPNorm, Gate, Up, Down []float32
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
	get := func(name string) ([]float32, error) {
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
		for _, f := range []struct {
			dst  *[]float32
			role string
		}{{&l.AttnNorm, ir.RoleAttnNorm}, {&l.Q, ir.RoleQ}, {&l.K, ir.RoleK}, {&l.V, ir.RoleV}, {&l.O, ir.RoleO},
			{&l.MLPNorm, ir.RoleMLPNorm}, {&l.Gate, ir.RoleGate}, {&l.Up, ir.RoleUp}, {&l.Down, ir.RoleDown}} {
			if *f.dst, err = get(ir.LayerName(i, f.role)); err != nil {
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
	copy(s.x, m.Embed[token*d:(token+1)*d])
	for li := range m.Layers {
		l := &m.Layers[li]
		hd := l.HeadDim
		qd, kvd := l.Heads*hd, l.KVHeads*hd
		rmsnorm(s.xb, s.x, l.AttnNorm, c.NormEps)
		q := make([]float32, qd)
		k := make([]float32, kvd)
		v := make([]float32, kvd)
		matvec(q, l.Q, s.xb)
		matvec(k, l.K, s.xb)
		matvec(v, l.V, s.xb)
		rope(q, hd, s.pos, m.invFreq[li])
		rope(k, hd, s.pos, m.invFreq[li])
		s.kc[li] = append(s.kc[li], k...)
		s.vc[li] = append(s.vc[li], v...)
		att := make([]float32, qd)
		scores := make([]float32, s.pos+1)
		sqrtHD := float32(math.Sqrt(float64(hd)))
		for h := 0; h < l.Heads; h++ {
			g := h / l.GroupSize()
			qh := q[h*hd : (h+1)*hd]
			for t := 0; t <= s.pos; t++ {
				kt := s.kc[li][t*kvd+g*hd : t*kvd+(g+1)*hd]
				var dot float32
				for i := range qh {
					dot += qh[i] * kt[i]
				}
				scores[t] = dot / sqrtHD
			}
			softmax(scores)
			out := att[h*hd : (h+1)*hd]
			for t := 0; t <= s.pos; t++ {
				vt := s.vc[li][t*kvd+g*hd : t*kvd+(g+1)*hd]
				for i := range out {
					out[i] += scores[t] * vt[i]
				}
			}
		}
		o := make([]float32, d)
		matvec(o, l.O, att)
		for i := range s.x {
			s.x[i] += o[i]
		}
		rmsnorm(s.xb, s.x, l.MLPNorm, c.NormEps)
		gate := make([]float32, l.MLP)
		up := make([]float32, l.MLP)
		matvec(gate, l.Gate, s.xb)
		matvec(up, l.Up, s.xb)
		for i := range gate {
			gate[i] = silu(gate[i]) * up[i]
		}
		matvec(o, l.Down, gate)
		for i := range s.x {
			s.x[i] += o[i]
		}
	}
	rmsnorm(s.xb, s.x, m.FinalNorm, c.NormEps)
	matvec(s.logits, m.Classifier, s.xb)
	s.pos++
	return s.logits, nil
}

func rmsnorm(out, x, w []float32, eps float64) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	ss = ss/float32(len(x)) + float32(eps)
	inv := 1 / float32(math.Sqrt(float64(ss)))
	for i := range out {
		out[i] = w[i] * (inv * x[i])
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
