// Package decoder64 is an independent float64 implementation of the
// decoder family whittle's IR describes (Llama: RMSNorm, grouped-query
// attention with RoPE in Hugging Face's half order, SwiGLU MLP), written
// one position at a time for clarity. It shares no code with the engines,
// so tests use it as the ground truth they compare a backend, the CPU
// engine's gradients and its statistics with.
package decoder64

import (
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
	c := &Model{Config: g.Config, W: map[string][]float64{}, inv: g.inv}
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
// outputs of its two norms, the attention's output (the input of o_proj),
// the MLP's activation (the input of down_proj) and its output.
type LayerActs struct {
	In, AttnNormOut, AttnOut, MLPNormOut, MLPAct, Out [][]float64
}

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
	}
	for l, lc := range cfg.Layers {
		if skip[l] {
			continue
		}
		name := func(role string) string { return ir.LayerName(l, role) }
		hd, H, KV := lc.HeadDim, lc.Heads, lc.KVHeads
		var rec *LayerActs
		if acts != nil {
			rec = &acts[l]
			rec.In = cloneRows(x)
		}
		h := make([][]float64, T)
		q := make([][]float64, T)
		k := make([][]float64, T)
		v := make([][]float64, T)
		for t := range x {
			h[t] = rmsNorm(x[t], g.W[name(ir.RoleAttnNorm)], cfg.NormEps)
			q[t] = matVec(g.W[name(ir.RoleQ)], h[t], H*hd)
			k[t] = matVec(g.W[name(ir.RoleK)], h[t], KV*hd)
			v[t] = matVec(g.W[name(ir.RoleV)], h[t], KV*hd)
			rope(q[t], hd, t, g.inv[l])
			rope(k[t], hd, t, g.inv[l])
		}
		a := make([][]float64, T)
		scale := 1 / math.Sqrt(float64(hd))
		group := H / KV
		for t := range x {
			a[t] = make([]float64, H*hd)
			for hh := 0; hh < H; hh++ {
				kvh := hh / group
				qv := q[t][hh*hd : (hh+1)*hd]
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := 0; j <= t; j++ {
					sc[j] = Dot(qv, k[j][kvh*hd:(kvh+1)*hd]) * scale
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				out := a[t][hh*hd : (hh+1)*hd]
				for j := range sc {
					p := sc[j] / sum
					for i := range out {
						out[i] += p * v[j][kvh*hd+i]
					}
				}
			}
		}
		h2 := make([][]float64, T)
		mact := make([][]float64, T)
		for t := range x {
			o := matVec(g.W[name(ir.RoleO)], a[t], d)
			for i := range x[t] {
				x[t][i] += o[i]
			}
			h2[t] = rmsNorm(x[t], g.W[name(ir.RoleMLPNorm)], cfg.NormEps)
			gate := matVec(g.W[name(ir.RoleGate)], h2[t], lc.MLP)
			up := matVec(g.W[name(ir.RoleUp)], h2[t], lc.MLP)
			mact[t] = make([]float64, lc.MLP)
			for i := range gate {
				mact[t][i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
			}
			dn := matVec(g.W[name(ir.RoleDown)], mact[t], d)
			for i := range x[t] {
				x[t][i] += dn[i]
			}
		}
		if rec != nil {
			rec.AttnNormOut, rec.AttnOut, rec.MLPNormOut, rec.MLPAct = h, a, h2, mact
			rec.Out = cloneRows(x)
		}
	}
	cls := g.Classifier()
	logits := make([][]float64, T)
	for t := range x {
		logits[t] = matVec(cls, rmsNorm(x[t], g.W[ir.NameFinalNorm], cfg.NormEps), cfg.Vocab)
	}
	return logits
}

func cloneRows(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i, r := range x {
		out[i] = slices.Clone(r)
	}
	return out
}

func rmsNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = v * r * w[i]
	}
	return out
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
