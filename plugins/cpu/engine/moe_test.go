package engine

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// checkMoEActs compares layer l's MoE view with decoder64's record of the
// same rows (b sequences of tt): router probabilities, chosen experts and
// weights, the grouping (every pair once, in its expert's block, rows in
// order), each chosen expert's activation and output, the shared expert.
func checkMoEActs(t *testing.T, v *MoEActivations, ref [][]decoder64.LayerActs, l, tt, d int, lc ir.LayerConfig) {
	t.Helper()
	if v == nil {
		t.Fatalf("layer %d: no MoE view", l)
	}
	k, ne, m := v.TopK, v.Experts, lc.ExpertMLP
	n := len(v.Probs) / ne
	if v.Offsets[0] != 0 || v.Offsets[ne] != n*k {
		t.Fatalf("layer %d: groups span [%d, %d), want [0, %d)", l, v.Offsets[0], v.Offsets[ne], n*k)
	}
	for e := 0; e < ne; e++ {
		for j := v.Offsets[e] + 1; j < v.Offsets[e+1]; j++ {
			if v.Rows[j] <= v.Rows[j-1] {
				t.Fatalf("layer %d expert %d: grouped rows %d, %d out of order", l, e, v.Rows[j-1], v.Rows[j])
			}
		}
	}
	near := func(what string, r int, got []float32, want []float64) {
		t.Helper()
		var sc float64
		for _, x := range want {
			sc = math.Max(sc, math.Abs(x))
		}
		for i, x := range want {
			if math.Abs(float64(got[i])-x) > 1e-4*sc+1e-6 {
				t.Fatalf("layer %d row %d %s [%d]: %v, float64 reference %v", l, r, what, i, got[i], x)
			}
		}
	}
	for r := 0; r < n; r++ {
		w := ref[r/tt][l].MoE[r%tt]
		near("router probabilities", r, v.Probs[r*ne:(r+1)*ne], w.Probs)
		near("routing weights", r, v.Weights[r*k:(r+1)*k], w.Weights)
		for s := 0; s < k; s++ {
			e := int(v.Selected[r*k+s])
			if e != w.Chosen[s] {
				t.Fatalf("layer %d row %d slot %d: expert %d, reference %d", l, r, s, e, w.Chosen[s])
			}
			j := int(v.Pos[r*k+s])
			if j < v.Offsets[e] || j >= v.Offsets[e+1] || int(v.Rows[j]) != r {
				t.Fatalf("layer %d row %d slot %d: grouped at %d (row %d), expert %d's block is [%d, %d)", l, r, s, j, v.Rows[j], e, v.Offsets[e], v.Offsets[e+1])
			}
			near("expert activation", r, v.Act[j*m:(j+1)*m], w.ExpertAct[e])
			near("expert output", r, v.Out[j*d:(j+1)*d], w.ExpertOut[e])
		}
		if (v.SharedAct != nil) != (lc.SharedMLP > 0) {
			t.Fatalf("layer %d: shared activations present %v with a shared expert of %d", l, v.SharedAct != nil, lc.SharedMLP)
		}
		if lc.SharedMLP > 0 {
			near("shared activation", r, v.SharedAct[r*lc.SharedMLP:(r+1)*lc.SharedMLP], w.SharedAct)
			near("shared gate", r, v.SharedGate[r:r+1], []float64{w.SharedGate})
		}
	}
}

// moeOutput recomputes row r's MoE output from the view: the weighted
// expert outputs plus the gated shared expert (SharedAct through
// sharedDown [hidden, shared]).
func moeOutput(v *MoEActivations, r, d int, sharedDown []float32) []float32 {
	out := make([]float64, d)
	for s := 0; s < v.TopK; s++ {
		j := int(v.Pos[r*v.TopK+s])
		for i := range out {
			out[i] += float64(v.Weights[r*v.TopK+s]) * float64(v.Out[j*d+i])
		}
	}
	if sharedDown != nil {
		sh := len(sharedDown) / d
		act := v.SharedAct[r*sh : (r+1)*sh]
		for i := range out {
			var z float64
			for j, a := range act {
				z += float64(sharedDown[i*sh+j]) * float64(a)
			}
			out[i] += float64(v.SharedGate[r]) * z
		}
	}
	res := make([]float32, d)
	for i, x := range out {
		res[i] = float32(x)
	}
	return res
}

// aux64 is Hugging Face's load_balancing_loss_func written out over
// decoder64's routing records: per group of MoE layers with one expert
// count, the rows of all its layers concatenated, E·Σ_e f_e·P_e with f_e
// the mean over rows of the K one-hot masks and P_e the mean probability.
func aux64(cfg ir.Config, acts [][]decoder64.LayerActs) float64 {
	byCount := map[int][]decoder64.MoEActs{}
	for l, lc := range cfg.Layers {
		if !lc.MoE() {
			continue
		}
		for s := range acts {
			byCount[lc.Experts] = append(byCount[lc.Experts], acts[s][l].MoE...)
		}
	}
	var total float64
	for ne, rows := range byCount {
		f := make([]float64, ne)
		p := make([]float64, ne)
		for _, r := range rows {
			for _, e := range r.Chosen {
				f[e] += 1 / float64(len(rows))
			}
			for e, v := range r.Probs {
				p[e] += v / float64(len(rows))
			}
		}
		var s float64
		for e := range f {
			s += f[e] * p[e]
		}
		total += float64(ne) * s
	}
	return total
}

// TestMoERouterAux: with a router balancing weight, the loss is CE plus
// weight·aux, aux equals HF's formula over the float64 decoder's routing,
// and every parameter's gradient matches finite differences of that
// float64 objective (the routers' included, which only the balancing
// term reaches through all experts' probabilities).
func TestMoERouterAux(t *testing.T) {
	const b, tt, weight = 2, 9, 0.7
	fams := irtest.MoEFamilies()
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cfg := fams[name]
			p := familyParams(t, cfg, 31, 0.4)
			c := familyLossCases[0]
			in := makeInputs(c, b, tt, cfg.Vocab, 32)
			obj := Objective{RouterAux: weight}
			e, err := New(p, Options{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Forward(in.tokens, b, tt); err != nil {
				t.Fatal(err)
			}
			res, err := e.LossGrad(in.tg, obj, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Backward(); err != nil {
				t.Fatal(err)
			}
			refLoss := func() (float64, float64) {
				ref := newRef64(p)
				acts := make([][]decoder64.LayerActs, b)
				var logits [][]float64
				for s := range acts {
					acts[s] = make([]decoder64.LayerActs, len(cfg.Layers))
					row := make([]int, tt)
					for i := range row {
						row[i] = int(in.tokens[s*tt+i])
					}
					logits = append(logits, ref.Forward(row, nil, acts[s])...)
				}
				aux := aux64(cfg, acts)
				return loss64(logits, nil, in.tg, Objective{}) + weight*aux, aux
			}
			wantLoss, wantAux := refLoss()
			if math.Abs(res.Aux-wantAux) > 1e-5*wantAux || math.Abs(res.Loss-wantLoss) > 1e-5*wantLoss {
				t.Fatalf("loss %v aux %v, float64 reference %v and %v", res.Loss, res.Aux, wantLoss, wantAux)
			}
			fd := &familyFD{t: t, h: fdStep(cfg), tol: 2e-3, abs: 1e-5, sample: 6, loss: func() float64 { l, _ := refLoss(); return l }}
			for ti, tn := range p.Tensors() {
				fd.check(tn.Name, tn.Data, e.G.Tensors()[ti].Data, uint64(ti))
			}
		})
	}
}

// TestMoERouterAuxOnly isolates the balancing term: the gradient of aux
// alone (no scored rows) reaches the routers and matches finite
// differences, and an inference engine reports the same aux as a training
// one (its layers share buffers).
func TestMoERouterAuxOnly(t *testing.T) {
	const b, tt = 2, 7
	cfg := irtest.MoEFamilies()["qwen2_moe"]
	p := familyParams(t, cfg, 33, 0.4)
	tokens := randomTokens(rand.New(rand.NewPCG(34, 1)), b*tt, cfg.Vocab)
	ids := make([]int32, b*tt)
	for i := range ids {
		ids[i] = -1 // no row scored: the objective is the balancing loss alone
	}
	tg := Targets{IDs: ids}
	obj := Objective{RouterAux: 1}
	train, err := New(p, Options{Threads: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := train.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	res, err := train.LossGrad(tg, obj, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := train.Backward(); err != nil {
		t.Fatal(err)
	}
	inf, err := New(p, Options{Threads: 2, Inference: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := inf.Forward(tokens, b, tt); err != nil {
		t.Fatal(err)
	}
	got, err := inf.Loss(tg, obj, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Aux != res.Aux || got.Loss != res.Loss || res.Loss != res.Aux {
		t.Fatalf("inference loss %v aux %v, training loss %v aux %v", got.Loss, got.Aux, res.Loss, res.Aux)
	}
	fd := &familyFD{t: t, h: fdStep(cfg), tol: 2e-3, abs: 1e-7, sample: 8, loss: func() float64 {
		ref := newRef64(p)
		acts := make([][]decoder64.LayerActs, b)
		for s := range acts {
			acts[s] = make([]decoder64.LayerActs, len(cfg.Layers))
			row := make([]int, tt)
			for i := range row {
				row[i] = int(tokens[s*tt+i])
			}
			ref.Forward(row, nil, acts[s])
		}
		return aux64(cfg, acts)
	}}
	var nonzero bool
	for ti, tn := range p.Tensors() {
		g := train.G.Tensors()[ti].Data
		for _, v := range g {
			nonzero = nonzero || v != 0
		}
		fd.check(tn.Name, tn.Data, g, uint64(ti))
	}
	if !nonzero {
		t.Fatal("the balancing loss has no gradient")
	}
}
