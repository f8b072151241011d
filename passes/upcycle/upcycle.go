// Package upcycle is the `upcycle` pass: sparse upcycling of a dense
// Llama-family model into a Mixtral-layout mixture of experts. Every
// expert of a layer starts as a copy of the layer's MLP and the router's
// rows are drawn small and random, so that different tokens reach
// different experts, the experts receive different gradients and diverge
// with training. Since Mixtral renormalizes the top-k routing weights to
// sum to one, the upcycled model computes exactly what the dense model
// computes until it is trained.
package upcycle

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

// Defaults of the options.
const (
	DefaultExperts = 4
	DefaultTopK    = 2
	DefaultNoise   = 0.01
)

// Config is the pass block's schema.
type Config struct {
	Model recipe.Ref `hcl:"model"`
	// Experts is the number of routed experts per layer.
	Experts *int `hcl:"experts,optional"`
	// TopK is num_experts_per_tok: the experts each token is routed to.
	TopK *int `hcl:"top_k,optional"`
	// Noise is the standard deviation of the router's entries; 0 makes
	// every routing weight equal (ties go to the lowest experts).
	Noise *float64 `hcl:"noise,optional"`
	// Seed selects the router's random entries.
	Seed *int64 `hcl:"seed,optional"`
}

// Pass implements pipeline.Pass.
type Pass struct{}

// Spec declares the schema.
func (Pass) Spec() recipe.KindSpec {
	return recipe.KindSpec{
		Kind:        "upcycle",
		Description: "sparse upcycling: a dense Llama-family model becomes a Mixtral-layout mixture of experts, each expert a copy of its layer's MLP, the router small and random",
		Produces:    recipe.SlotModel,
		NewConfig:   func() any { return &Config{} },
	}
}

// Options are the checked settings.
type Options struct {
	Experts, TopK int
	Noise         float64
	Seed          uint64
}

func (c *Config) resolve(p *recipe.Pass) (Options, error) {
	o := Options{Experts: DefaultExperts, TopK: DefaultTopK, Noise: DefaultNoise}
	if c.Experts != nil {
		o.Experts = *c.Experts
	}
	if c.TopK != nil {
		o.TopK = *c.TopK
	}
	if c.Noise != nil {
		o.Noise = *c.Noise
	}
	if c.Seed != nil {
		o.Seed = uint64(*c.Seed)
	}
	if o.Experts < 1 {
		return o, passutil.Errorf(p, "experts", "experts = %d must be at least 1", o.Experts)
	}
	if o.TopK < 1 || o.TopK > o.Experts {
		return o, passutil.Errorf(p, "top_k", "top_k = %d must be between 1 and experts = %d", o.TopK, o.Experts)
	}
	if math.IsNaN(o.Noise) || math.IsInf(o.Noise, 0) || o.Noise < 0 {
		return o, passutil.Errorf(p, "noise", "noise = %g must be finite and not negative", o.Noise)
	}
	return o, nil
}

// Plan checks the options and the model and returns the MoE config.
func (Pass) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	c := p.Config.(*Config)
	cfg, err := pc.Model(c.Model)
	if err != nil {
		return nil, err
	}
	o, err := c.resolve(p)
	if err != nil {
		return nil, err
	}
	out, err := MoEConfig(cfg, o)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Run upcycles.
func (Pass) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	c := p.Config.(*Config)
	o, err := c.resolve(p)
	if err != nil {
		return err
	}
	m, err := rc.Model(c.Model)
	if err != nil {
		return err
	}
	out, err := Upcycle(m, o)
	if err != nil {
		return err
	}
	params := out.Config.Params()
	rc.Metric("params_before", m.Config.Params().Total)
	rc.Metric("params_after", params.Total)
	rc.Metric("active_params_after", params.Active)
	rc.SetModel(out)
	return nil
}

// MoEConfig is cfg upcycled: the Mixtral family with o.Experts experts of
// the layer's MLP width in every layer. Only plain Llama and Mistral
// models qualify, since Mixtral has none of the other families' options.
func MoEConfig(cfg ir.Config, o Options) (ir.Config, error) {
	switch cfg.Arch {
	case "", "llama", "mistral":
	default:
		return cfg, fmt.Errorf("upcycle makes a Mixtral-layout model from a Llama or Mistral one; this model's family is %q", cfg.Arch)
	}
	if cfg.AttnBias || cfg.QKNorm || cfg.PostNorms || cfg.EmbedScale || cfg.NormOffset != 0 || cfg.AttnSoftCap != 0 || cfg.FinalSoftCap != 0 || (cfg.Act != "" && cfg.Act != ir.ActSiLU) {
		return cfg, fmt.Errorf("upcycle needs a plain Llama-family model (SwiGLU, no biases, q/k norms, post norms, embedding scale or soft caps), which Mixtral's layout can hold")
	}
	out := cfg.Clone()
	out.Arch, out.ExpertsPerToken, out.NormTopK = "mixtral", o.TopK, true
	for i, l := range out.Layers {
		if l.MoE() {
			return cfg, fmt.Errorf("layer %d is already a mixture of experts", i)
		}
		out.Layers[i].Experts, out.Layers[i].ExpertMLP, out.Layers[i].MLP = o.Experts, l.MLP, 0
	}
	if err := out.Check(); err != nil {
		return cfg, fmt.Errorf("the upcycled config: %w", err)
	}
	return out, nil
}

// Upcycle returns m as a mixture of experts: attention, norms and
// embeddings shared, each layer's MLP copied into every expert, and a
// router of N(0, noise²) entries drawn per layer from the seed and the
// router's name.
func Upcycle(m *ir.Model, o Options) (*ir.Model, error) {
	cfg, err := MoEConfig(m.Config, o)
	if err != nil {
		return nil, err
	}
	out := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Tokenizer: m.Tokenizer,
		Source: fmt.Sprintf("upcycled (%d experts, top %d, noise %g, seed %d) from %s", o.Experts, o.TopK, o.Noise, o.Seed, m.Source)}
	dense := map[string]bool{}
	for i := range m.Config.Layers {
		lt := m.Config.LayerTensors(i)
		dense[lt.Gate], dense[lt.Up], dense[lt.Down] = true, true, true
	}
	for _, name := range m.TensorNames() {
		if dense[name] {
			continue
		}
		t, err := m.Tensor(name)
		if err != nil {
			return nil, fmt.Errorf("upcycle: %w", err)
		}
		out.Tensors[name] = t
	}
	for i := range m.Config.Layers {
		src, dst := m.Config.LayerTensors(i), cfg.LayerTensors(i)
		for _, pair := range [][2]string{{src.Gate, dst.ExpertGate}, {src.Up, dst.ExpertUp}, {src.Down, dst.ExpertDown}} {
			t, err := m.Tensor(pair[0])
			if err != nil {
				return nil, fmt.Errorf("upcycle: %w", err)
			}
			v, err := t.Float32()
			if err != nil {
				return nil, fmt.Errorf("upcycle: reading %s: %w", pair[0], err)
			}
			stacked := make([]float32, 0, o.Experts*len(v))
			for range o.Experts {
				stacked = append(stacked, v...)
			}
			out.Tensors[pair[1]] = ir.FromFloat32(t.DType, append([]int{o.Experts}, t.Shape...), stacked)
		}
		gate, err := m.Tensor(src.Gate)
		if err != nil {
			return nil, fmt.Errorf("upcycle: %w", err)
		}
		h := fnv.New64a()
		h.Write([]byte(dst.Router))
		rng := rand.New(rand.NewPCG(o.Seed, h.Sum64()))
		r := make([]float32, o.Experts*cfg.Hidden)
		for j := range r {
			r[j] = float32(rng.NormFloat64() * o.Noise)
		}
		out.Tensors[dst.Router] = ir.FromFloat32(gate.DType, []int{o.Experts, cfg.Hidden}, r)
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("upcycle: the mixture of experts made from %s: %w", m.Source, err)
	}
	return out, nil
}
