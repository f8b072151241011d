package engine

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Layer is one decoder layer's weights, [out, in] row-major as in the IR
// (Q and K rows in Hugging Face's half RoPE order). The family options'
// tensors (ir.LayerTensors) are nil when the config has none.
type Layer struct {
	ir.LayerConfig
	AttnNorm, Q, K, V, O    []float32
	MLPNorm, Gate, Up, Down []float32
	// QBias, KBias, VBias are the projections' biases (Qwen2).
	QBias, KBias, VBias []float32
	// QNorm and KNorm are the per-head RMSNorm weights [head_dim] (Qwen3).
	QNorm, KNorm []float32
	// AttnPostNorm and MLPPostNorm normalize the attention and MLP outputs
	// before their residual adds (Gemma 2).
	AttnPostNorm, MLPPostNorm []float32
	// A mixture-of-experts layer (LayerConfig.MoE) has no Gate, Up, Down
	// but a router [experts, hidden], the routed experts' weights stacked
	// along dimension 0 (ExpertGate, ExpertUp [experts, expert_mlp,
	// hidden], ExpertDown [experts, hidden, expert_mlp]) and optionally a
	// shared expert (SharedGate, SharedUp [shared, hidden], SharedDown
	// [hidden, shared]) with its sigmoid gate SharedExpertGate [1, hidden].
	Router                           []float32
	ExpertGate, ExpertUp, ExpertDown []float32
	SharedGate, SharedUp, SharedDown []float32
	SharedExpertGate                 []float32
}

// Params holds a model's weights as float32, every tensor a slice of one
// flat buffer so that optimizers and gradient norms run over a single
// array. Gradients are a Params of the same configuration.
type Params struct {
	Config    ir.Config
	Embed     []float32
	Layers    []Layer
	FinalNorm []float32
	// Classifier is nil when the configuration ties it to Embed.
	Classifier []float32
	// Tokenizer passes through from FromIR to ToIR untouched.
	Tokenizer *tokenizer.Tokenizer

	flat    []float32
	tensors []Tensor
}

// Tensor is a named view of one weight inside Params.
type Tensor struct {
	Name  string
	Shape []int
	// Offset is where Data starts in Flat().
	Offset int
	Data   []float32
}

// NewParams allocates zeroed weights for cfg.
func NewParams(cfg ir.Config) (*Params, error) {
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	p := &Params{Config: cfg.Clone()}
	names, shapes := p.Config.ExpectedShapes()
	total := 0
	for _, n := range names {
		total += numel(shapes[n])
	}
	p.flat = make([]float32, total)
	off := 0
	byName := make(map[string][]float32, len(names))
	for _, n := range names {
		sz := numel(shapes[n])
		t := Tensor{Name: n, Shape: append([]int(nil), shapes[n]...), Offset: off, Data: p.flat[off : off+sz : off+sz]}
		p.tensors = append(p.tensors, t)
		byName[n] = t.Data
		off += sz
	}
	p.Embed = byName[ir.NameEmbed]
	p.FinalNorm = byName[ir.NameFinalNorm]
	if !p.Config.Tied {
		p.Classifier = byName[ir.NameClassifier]
	}
	for i, lc := range p.Config.Layers {
		// Absent tensors have the name "", which byName lacks: nil.
		t := p.Config.LayerTensors(i)
		p.Layers = append(p.Layers, Layer{
			LayerConfig: lc,
			AttnNorm:    byName[t.AttnNorm],
			Q:           byName[t.Q], K: byName[t.K], V: byName[t.V], O: byName[t.O],
			QBias: byName[t.QBias], KBias: byName[t.KBias], VBias: byName[t.VBias],
			QNorm: byName[t.QNorm], KNorm: byName[t.KNorm],
			AttnPostNorm: byName[t.AttnPostNorm],
			MLPNorm:      byName[t.MLPNorm],
			Gate:         byName[t.Gate], Up: byName[t.Up], Down: byName[t.Down],
			MLPPostNorm: byName[t.MLPPostNorm],
			Router:      byName[t.Router],
			ExpertGate:  byName[t.ExpertGate], ExpertUp: byName[t.ExpertUp], ExpertDown: byName[t.ExpertDown],
			SharedGate: byName[t.SharedGate], SharedUp: byName[t.SharedUp], SharedDown: byName[t.SharedDown],
			SharedExpertGate: byName[t.SharedExpertGate],
		})
	}
	return p, nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// FromIR decodes every tensor of m into float32.
func FromIR(m *ir.Model) (*Params, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	p, err := NewParams(m.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Source, err)
	}
	p.Tokenizer = m.Tokenizer
	for _, t := range p.tensors {
		src, err := m.Tensor(t.Name)
		if err != nil {
			return nil, err
		}
		v, err := src.Float32()
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", m.Source, t.Name, err)
		}
		copy(t.Data, v)
	}
	return p, nil
}

// ToIR copies the weights into a new in-memory ir.Model stored as dtype.
func (p *Params) ToIR(dtype ir.DType) (*ir.Model, error) {
	switch dtype {
	case ir.F32, ir.F16, ir.BF16:
	default:
		return nil, fmt.Errorf("engine: cannot store weights as dtype %v", dtype)
	}
	m := &ir.Model{
		Config:    p.Config.Clone(),
		Tensors:   make(map[string]*ir.Tensor, len(p.tensors)),
		Tokenizer: p.Tokenizer,
		Source:    "cpu engine weights",
	}
	for _, t := range p.tensors {
		m.Tensors[t.Name] = ir.FromFloat32(dtype, t.Shape, t.Data)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("engine: exported model is inconsistent: %w", err)
	}
	return m, nil
}

// Tensors lists the weights in canonical file order; a tied classifier is
// not listed apart from the embedding. The views alias p.
func (p *Params) Tensors() []Tensor { return p.tensors }

// Flat is every weight in one slice, in Tensors order.
func (p *Params) Flat() []float32 { return p.flat }

// ZerosLike allocates zeroed parameters (gradients, optimizer moments) of
// the same configuration.
func (p *Params) ZerosLike() *Params {
	z, err := NewParams(p.Config)
	if err != nil {
		// p was built from a checked config.
		panic(err)
	}
	return z
}

// Clone is a deep copy.
func (p *Params) Clone() *Params {
	c := p.ZerosLike()
	copy(c.flat, p.flat)
	c.Tokenizer = p.Tokenizer
	return c
}

// InitRandom fills p the way Llama-family models are initialized for
// training from scratch: matrices from N(0, 0.02²), the residual output
// projections (o_proj, down_proj) scaled by 1/sqrt(2·layers) as in GPT-2,
// biases 0 and norms the identity (weights 1 − NormOffset, so that the
// applied offset + w is 1). The same seed gives the same weights.
func (p *Params) InitRandom(seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	resid := 0.02 / math.Sqrt(2*float64(len(p.Layers)))
	biases := map[string]bool{}
	for l := range p.Layers {
		t := p.Config.LayerTensors(l)
		biases[t.QBias], biases[t.KBias], biases[t.VBias] = true, true, true
	}
	norm := float32(1 - p.Config.NormOffset)
	for _, t := range p.tensors {
		if len(t.Shape) == 1 {
			v := norm
			if biases[t.Name] {
				v = 0
			}
			for i := range t.Data {
				t.Data[i] = v
			}
			continue
		}
		std := 0.02
		if isResidualOut(&p.Config, t.Name) {
			std = resid
		}
		for i := range t.Data {
			t.Data[i] = float32(r.NormFloat64() * std)
		}
	}
}

func isResidualOut(cfg *ir.Config, name string) bool {
	for l := range cfg.Layers {
		if t := cfg.LayerTensors(l); name == t.O || name == t.Down || name == t.ExpertDown || name == t.SharedDown {
			return true
		}
	}
	return false
}

// classifier returns the output projection, the embedding when tied.
func (p *Params) classifier() []float32 {
	if p.Config.Tied {
		return p.Embed
	}
	return p.Classifier
}
