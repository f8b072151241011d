package backend

import (
	"fmt"
	"slices"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// routing is a mixture-of-experts layer's choice of experts for N tokens
// with k experts each: the N·k (token, slot) assignments grouped by
// expert, expert e's being positions off[e]:off[e+1] of rows and slots.
type routing struct {
	experts, k int
	// rows[i] is the token of assignment i, slots[i] its position in the
	// flattened [N, k] routing weights.
	rows, slots []int64
	off         []int
	// choice is each token's experts in slot order, [N, k] row-major.
	choice []int64
}

// count is how many tokens were routed to expert e.
func (r *routing) count(e int) int { return r.off[e+1] - r.off[e] }

// route picks each token's k most probable experts from the router
// probabilities p [N, E] (row-major, on the host), ties going to the
// lower expert index, and groups the assignments by expert.
func route(p []float32, n, experts, k int) *routing {
	r := &routing{experts: experts, k: k, off: make([]int, experts+1)}
	r.choice = make([]int64, n*k)
	order := make([]int, experts)
	for t := range n {
		row := p[t*experts : (t+1)*experts]
		for e := range order {
			order[e] = e
		}
		// A stable sort by decreasing probability keeps equal
		// probabilities in expert order.
		slices.SortStableFunc(order, func(a, b int) int {
			switch {
			case row[a] > row[b]:
				return -1
			case row[a] < row[b]:
				return 1
			}
			return 0
		})
		for j, e := range order[:k] {
			r.choice[t*k+j] = int64(e)
			r.off[e+1]++
		}
	}
	for e := range experts {
		r.off[e+1] += r.off[e]
	}
	r.rows, r.slots = make([]int64, n*k), make([]int64, n*k)
	next := slices.Clone(r.off[:experts])
	for i, e := range r.choice {
		r.rows[next[e]], r.slots[next[e]] = int64(i/k), int64(i)
		next[e]++
	}
	return r
}

// moeActs are a mixture-of-experts layer's activations for statistics
// and the router's auxiliary loss, valid until the hook returns (the
// tensors belong to the layer's scope).
type moeActs struct {
	route *routing
	// probs: the router's float32 probabilities [N, E] (softmax over all
	// experts, differentiable when training).
	probs torch.Tensor
	// act: the experts' activations (the inputs of their down
	// projections) [N·k, expert_mlp] and out: their weighted float32
	// outputs w·expert_e(x) [N·k, hidden], both grouped by expert as
	// route orders the assignments.
	act, out torch.Tensor
	// sharedAct: the shared expert's activations [N, shared_mlp], when
	// the layer has one.
	sharedAct torch.Tensor
}

// moe is the mixture of experts of layer l on its normalized input h
// (float32 [N, hidden]): the router in float32 (so that routing does not
// depend on the compute dtype's rounding), top-k on the host, then each
// expert's gated MLP on just the rows routed to it (gathered grouped by
// expert; matrix products in cdt), the outputs weighted and summed back
// into their tokens' rows, plus the shared expert scaled by its sigmoid
// gate. It returns the float32 output [N, hidden] and the activations
// (the experts' only when record is set: the hooks need them, training
// does not).
func (b *Backend) moe(s *torch.Scope, m *model, l int, lc ir.LayerConfig, h torch.Tensor, n int, cdt torch.DType, record bool) (torch.Tensor, *moeActs, error) {
	cfg := &m.cfg
	lt := cfg.LayerTensors(l)
	k := cfg.ExpertsPerToken
	probs := s.Softmax(s.Linear(h, m.weight(s, lt.Router, torch.Float32)), -1, torch.Float32)
	host := s.Float32s(probs)
	if err := s.Err(); err != nil {
		return torch.Tensor{}, nil, fmt.Errorf("router: %w", err)
	}
	r := route(host, n, lc.Experts, k)
	idx := func(v []int64) torch.Tensor { return s.To(s.FromInt64(v, int64(len(v))), b.dev) }
	// inv[slot] is the grouped position of the slot's assignment.
	inv := make([]int64, len(r.slots))
	for i, sl := range r.slots {
		inv[sl] = int64(i)
	}
	slots := idx(r.slots)
	w := s.Gather(probs, 1, s.View(idx(r.choice), int64(n), int64(k)))
	if cfg.NormTopK {
		w = s.Div(w, s.Sum(w, true, -1))
	}
	w = s.IndexSelect(s.View(w, int64(n*k)), 0, slots)

	// Tokens are gathered and their outputs summed through permutations
	// of the [N·k] slots rather than an index_add over tokens: every index
	// is distinct, so neither direction needs atomic accumulation and the
	// result does not depend on a GPU's scheduling.
	C := int64(cfg.Hidden)
	hc := s.ToDType(h, cdt)
	xs := s.IndexSelect(s.Reshape(s.Expand(s.Unsqueeze(hc, 1), int64(n), int64(k), C), int64(n*k), C), 0, slots)
	// Unbind, not a Select per expert: the weights' gradients come back
	// as one stacked tensor instead of one full-size one per expert.
	gate := s.Unbind(m.weight(s, lt.ExpertGate, cdt), 0)
	up := s.Unbind(m.weight(s, lt.ExpertUp, cdt), 0)
	down := s.Unbind(m.weight(s, lt.ExpertDown, cdt), 0)
	if err := s.Err(); err != nil {
		return torch.Tensor{}, nil, err
	}
	var acts, outs []torch.Tensor
	for e := range lc.Experts {
		c := r.count(e)
		if c == 0 {
			continue
		}
		x := s.Narrow(xs, 0, int64(r.off[e]), int64(c))
		a := gated(s, cfg, s.Linear(x, gate[e]), s.Linear(x, up[e]))
		acts = append(acts, a)
		outs = append(outs, s.Linear(a, down[e]))
	}
	ys := s.Mul(s.ToDType(s.Cat(outs, 0), torch.Float32), s.Unsqueeze(w, 1))
	out := s.Sum(s.View(s.IndexSelect(ys, 0, idx(inv)), int64(n), int64(k), C), false, 1)
	ma := &moeActs{route: r, probs: probs, out: ys}
	if record {
		ma.act = s.Cat(acts, 0)
	}
	if lt.SharedDown != "" {
		a := gated(s, cfg, s.Linear(hc, m.weight(s, lt.SharedGate, cdt)), s.Linear(hc, m.weight(s, lt.SharedUp, cdt)))
		y := s.ToDType(s.Linear(a, m.weight(s, lt.SharedDown, cdt)), torch.Float32)
		g := s.Sigmoid(s.Linear(h, m.weight(s, lt.SharedExpertGate, torch.Float32)))
		out = s.Add(out, s.Mul(y, g))
		ma.sharedAct = a
	}
	return out, ma, s.Err()
}

// gated is the family's gated activation act(gate)·up.
func gated(s *torch.Scope, cfg *ir.Config, gate, up torch.Tensor) torch.Tensor {
	if cfg.Activation() == ir.ActGELUTanh {
		gate = s.GeluTanh(gate)
	} else {
		gate = s.Silu(gate)
	}
	return s.Mul(gate, up)
}

// hasMoE reports whether any layer of cfg is a mixture of experts.
func hasMoE(cfg *ir.Config) bool {
	return slices.ContainsFunc(cfg.Layers, ir.LayerConfig.MoE)
}

// routerAux collects what the routers' load-balancing loss needs from a
// forward pass: per computed mixture-of-experts layer, the sum over the
// batch's rows of the router probabilities (differentiable, owned by s)
// and how many rows were routed to each expert.
type routerAux struct {
	s      *torch.Scope
	rows   int
	layers []auxLayer
}

type auxLayer struct {
	prob  torch.Tensor // float32 [experts]
	count []int
}

// add records layer activations ma (of a layer scope ls).
func (a *routerAux) add(ls *torch.Scope, ma *moeActs) {
	r := ma.route
	p := ls.Sum(ma.probs, false, 0)
	if ls.Err() != nil {
		return
	}
	count := make([]int, r.experts)
	for e := range count {
		count[e] = r.count(e)
	}
	a.layers = append(a.layers, auxLayer{prob: a.s.Adopt(ls.Keep(p)), count: count})
	a.rows = len(r.rows) / r.k
}

// loss is Hugging Face Mixtral's load_balancing_loss_func (no attention
// mask), as the CPU engine computes it: the routers of all layers are
// concatenated as M rows, and aux = E·Σ_e f_e·P_e with f_e the fraction of
// rows routed to e (a constant: top-k has no gradient) and P_e e's mean
// probability. Layers with different expert counts (after non-uniform
// pruning) form separate groups whose losses add. It is a float32 scalar,
// undefined without mixture-of-experts layers.
func (a *routerAux) loss(s *torch.Scope, dev torch.Device) torch.Tensor {
	var order []int
	groups := map[int][]auxLayer{}
	for _, l := range a.layers {
		e := len(l.count)
		if _, ok := groups[e]; !ok {
			order = append(order, e)
		}
		groups[e] = append(groups[e], l)
	}
	var total torch.Tensor
	for _, E := range order {
		ls := groups[E]
		m := float64(len(ls) * a.rows)
		coef := make([]float32, E) // E·count_e/M², the factor of Σ probs
		var prob torch.Tensor
		for _, l := range ls {
			for e := range E {
				coef[e] += float32(float64(E) * float64(l.count[e]) / (m * m))
			}
			if prob.Defined() {
				prob = s.Add(prob, l.prob)
			} else {
				prob = l.prob
			}
		}
		g := s.Sum(s.Mul(prob, s.To(s.FromFloat32(coef, int64(E)), dev)), false)
		if total.Defined() {
			total = s.Add(total, g)
		} else {
			total = g
		}
	}
	return total
}
