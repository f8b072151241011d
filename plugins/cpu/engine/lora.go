package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/blas"
)

// LoRARoles are the layer matrices an adapter may target, in the order
// adapters are laid out.
var LoRARoles = []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleO, ir.RoleGate, ir.RoleUp, ir.RoleDown}

func loraSlot(role string) int { return slices.Index(LoRARoles, role) }

// LoRAConfig describes low-rank adapters (Hu et al., 2021): an adapted
// matrix W [out, in] acts as W + (Alpha/Rank)·B·A with A [Rank, in] and
// B [out, Rank].
type LoRAConfig struct {
	Rank  int
	Alpha float64
	// Targets are the roles (LoRARoles) adapted in every layer.
	Targets []string
}

// Adapter is the low-rank update of one matrix. A, B and their gradients
// are views into the LoRA's flat buffers.
type Adapter struct {
	Layer   int
	Role    string
	In, Out int
	A, B    []float32
	GA, GB  []float32
}

// LoRA is a set of adapters over a model's layers. Its parameters live in
// one flat buffer (A then B of each adapter, in layer then LoRARoles
// order), as do their gradients, so AdamW and gradient norms treat them as
// one more tensor.
type LoRA struct {
	Rank     int
	Alpha    float64
	Adapters []Adapter

	flat, grad []float32
}

// NewLoRA builds adapters for cfg: B is zero, so the adapted model starts
// equal to the base one, and A is drawn uniformly from ±1/sqrt(in), the
// bound of PyTorch's kaiming_uniform_(a=√5) that PEFT uses. The same seed
// gives the same adapters.
func NewLoRA(cfg ir.Config, c LoRAConfig, seed uint64) (*LoRA, error) {
	if c.Rank <= 0 {
		return nil, fmt.Errorf("engine: LoRA rank %d must be positive", c.Rank)
	}
	if math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) || c.Alpha == 0 {
		return nil, fmt.Errorf("engine: LoRA alpha %g must be finite and non-zero", c.Alpha)
	}
	if len(c.Targets) == 0 {
		return nil, fmt.Errorf("engine: LoRA has no target matrices")
	}
	want := make([]bool, len(LoRARoles))
	for _, r := range c.Targets {
		s := loraSlot(r)
		if s < 0 {
			return nil, fmt.Errorf("engine: LoRA target %q is not one of %v", r, LoRARoles)
		}
		if want[s] {
			return nil, fmt.Errorf("engine: LoRA target %q listed twice", r)
		}
		want[s] = true
	}
	l := &LoRA{Rank: c.Rank, Alpha: c.Alpha}
	total := 0
	for li, lc := range cfg.Layers {
		for s, role := range LoRARoles {
			if !want[s] || (lc.MoE() && isMLPRole(role)) {
				continue // a mixture of experts has no dense MLP matrices to adapt
			}
			out, in := roleShape(cfg.Hidden, lc, role)
			l.Adapters = append(l.Adapters, Adapter{Layer: li, Role: role, In: in, Out: out})
			total += c.Rank * (in + out)
		}
	}
	l.flat = make([]float32, total)
	l.grad = make([]float32, total)
	off := 0
	for i := range l.Adapters {
		a := &l.Adapters[i]
		na, nb := c.Rank*a.In, a.Out*c.Rank
		a.A, a.GA = l.flat[off:off+na:off+na], l.grad[off:off+na:off+na]
		off += na
		a.B, a.GB = l.flat[off:off+nb:off+nb], l.grad[off:off+nb:off+nb]
		off += nb
	}
	r := rand.New(rand.NewPCG(seed, 0x4c6f5241))
	for _, a := range l.Adapters {
		bound := 1 / math.Sqrt(float64(a.In))
		for i := range a.A {
			a.A[i] = float32((2*r.Float64() - 1) * bound)
		}
	}
	return l, nil
}

func isMLPRole(role string) bool {
	return role == ir.RoleGate || role == ir.RoleUp || role == ir.RoleDown
}

// roleShape is the [out, in] shape of a layer matrix.
func roleShape(hidden int, lc ir.LayerConfig, role string) (out, in int) {
	q, kv := lc.Heads*lc.HeadDim, lc.KVHeads*lc.HeadDim
	switch role {
	case ir.RoleQ:
		return q, hidden
	case ir.RoleK, ir.RoleV:
		return kv, hidden
	case ir.RoleO:
		return hidden, q
	case ir.RoleGate, ir.RoleUp:
		return lc.MLP, hidden
	case ir.RoleDown:
		return hidden, lc.MLP
	}
	return 0, 0
}

// Scale is Alpha/Rank, the factor on B·A.
func (l *LoRA) Scale() float32 { return float32(l.Alpha / float64(l.Rank)) }

// Flat is every adapter parameter in one slice.
func (l *LoRA) Flat() []float32 { return l.flat }

// Grad is the gradient of Flat, accumulated by a training engine's
// Backward and cleared by its ZeroGrad.
func (l *LoRA) Grad() []float32 { return l.grad }

// Merge adds every adapter's Scale·B·A into the matching weights of p.
func (l *LoRA) Merge(p *Params, threads int) error {
	if err := l.check(&p.Config); err != nil {
		return err
	}
	for _, a := range l.Adapters {
		w := p.Layers[a.Layer].weight(a.Role)
		blas.SgemmThreads(threads, false, false, a.Out, a.In, l.Rank, l.Scale(), a.B, l.Rank, a.A, a.In, 1, w, a.In)
	}
	return nil
}

// check reports whether the adapters fit cfg's layers.
func (l *LoRA) check(cfg *ir.Config) error {
	for _, a := range l.Adapters {
		if a.Layer >= len(cfg.Layers) {
			return fmt.Errorf("engine: LoRA adapter for layer %d, the model has %d layers", a.Layer, len(cfg.Layers))
		}
		if out, in := roleShape(cfg.Hidden, cfg.Layers[a.Layer], a.Role); out != a.Out || in != a.In {
			return fmt.Errorf("engine: LoRA adapter of %s is %d×%d, the matrix is %d×%d",
				ir.LayerName(a.Layer, a.Role), a.Out, a.In, out, in)
		}
	}
	return nil
}

// weight returns the layer matrix of a role.
func (p *Layer) weight(role string) []float32 {
	switch role {
	case ir.RoleQ:
		return p.Q
	case ir.RoleK:
		return p.K
	case ir.RoleV:
		return p.V
	case ir.RoleO:
		return p.O
	case ir.RoleGate:
		return p.Gate
	case ir.RoleUp:
		return p.Up
	case ir.RoleDown:
		return p.Down
	}
	return nil
}

// engineLoRA is an engine's view of attached adapters: which adapter each
// layer matrix has, and per adapter the activations u = x·Aᵀ that
// Backward needs.
type engineLoRA struct {
	l   *LoRA
	at  [][]int // [layer][slot] → adapter index or -1
	u   [][]float32
	du  []float32
	gOK bool // gradients go to l.grad (training engine)
}

// SetLoRA attaches adapters to the engine (nil detaches them). Forward then
// adds Scale·B·(A·x) to each adapted matrix's output; on a training engine
// Backward adds the adapters' gradients to l.Grad() and AdamW.Step updates
// them, whether or not the base weights are frozen. One LoRA may be
// attached to a training engine and, for evaluation, inference engines
// over the same Params.
func (e *Engine) SetLoRA(l *LoRA) error {
	e.ready, e.gradOK = false, false
	if l == nil {
		e.lora = nil
		return nil
	}
	if err := l.check(&e.P.Config); err != nil {
		return err
	}
	el := &engineLoRA{l: l, at: make([][]int, len(e.P.Layers)), u: make([][]float32, len(l.Adapters)), gOK: e.G != nil}
	for li := range el.at {
		el.at[li] = []int{-1, -1, -1, -1, -1, -1, -1}
	}
	for i, a := range l.Adapters {
		el.at[a.Layer][loraSlot(a.Role)] = i
	}
	e.lora = el
	return nil
}

// LoRA returns the attached adapters, or nil.
func (e *Engine) LoRA() *LoRA {
	if e.lora == nil {
		return nil
	}
	return e.lora.l
}

// adapter is the index of the adapter on layer l's role, or -1.
func (e *Engine) adapter(l int, role string) int {
	if e.lora == nil {
		return -1
	}
	return e.lora.at[l][loraSlot(role)]
}

// proj computes y = x·Wᵀ + beta·y for layer l's matrix of a role, plus its
// adapter's Scale·(x·Aᵀ)·Bᵀ when it has one.
func (e *Engine) proj(l int, role string, y, x, w []float32, n, out, in int, beta float32) {
	e.linear(y, x, w, n, out, in, beta)
	i := e.adapter(l, role)
	if i < 0 {
		return
	}
	el := e.lora
	a := &el.l.Adapters[i]
	r := el.l.Rank
	el.u[i] = grow(el.u[i], n*r)
	u := el.u[i]
	blas.SgemmThreads(e.threads, false, true, n, r, in, 1, x, in, a.A, in, 0, u, r)
	blas.SgemmThreads(e.threads, false, true, n, out, r, el.l.Scale(), u, r, a.B, r, 1, y, out)
}

// loraBackward, for the adapter of layer l's role (if any), adds the
// gradients of A and B for dy at the matrix output and x at its input, and
// when dx is not nil adds the adapter's share of the input gradient:
//
//	du = s·dy·B,  dB += s·dyᵀ·u,  dA += duᵀ·x,  dx += du·A
func (e *Engine) loraBackward(l int, role string, dy, x, dx []float32, n int) {
	i := e.adapter(l, role)
	if i < 0 || !e.lora.gOK {
		return
	}
	el := e.lora
	a := &el.l.Adapters[i]
	r, s := el.l.Rank, el.l.Scale()
	el.du = grow(el.du, n*r)
	du := el.du
	th := e.threads
	blas.SgemmThreads(th, false, false, n, r, a.Out, s, dy, a.Out, a.B, r, 0, du, r)
	blas.SgemmThreads(th, true, false, a.Out, r, n, s, dy, a.Out, el.u[i], r, 1, a.GB, r)
	blas.SgemmThreads(th, true, false, r, a.In, n, 1, du, r, x, a.In, 1, a.GA, a.In)
	if dx != nil {
		blas.SgemmThreads(th, false, false, n, a.In, r, 1, du, r, a.A, a.In, 1, dx, a.In)
	}
}

// loraLowest is the lowest layer with an adapter that trains, or the
// number of layers.
func (e *Engine) loraLowest() int {
	if e.lora == nil || !e.lora.gOK || len(e.lora.l.Adapters) == 0 {
		return len(e.P.Layers)
	}
	return e.lora.l.Adapters[0].Layer
}
