package hf

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
)

// Hugging Face stores one tensor per routed expert
// (model.layers.i.block_sparse_moe.experts.{j}.w1.weight, or
// model.layers.i.mlp.experts.{j}.gate_proj.weight); whittle stacks a
// layer's experts along a new dimension 0 under the name without the
// expert's index (see ir.LayerTensors).

// perExpertRE matches the name of one expert's tensor.
var perExpertRE = regexp.MustCompile(`\.experts\.\d+\.`)

// expertName is expert j's tensor in the files for the stacked tensor
// name.
func expertName(stacked string, j int) string {
	return strings.Replace(stacked, ".experts.", fmt.Sprintf(".experts.%d.", j), 1)
}

// expertGroup is one stacked tensor of a layer and its experts' count.
type expertGroup struct {
	name    string
	experts int
}

// expertGroups lists cfg's stacked expert tensors.
func expertGroups(cfg *ir.Config) []expertGroup {
	var out []expertGroup
	for i, l := range cfg.Layers {
		if !l.MoE() {
			continue
		}
		lt := cfg.LayerTensors(i)
		for _, name := range []string{lt.ExpertGate, lt.ExpertUp, lt.ExpertDown} {
			out = append(out, expertGroup{name, l.Experts})
		}
	}
	return out
}

// stackExperts replaces each layer's per-expert tensors by the stacked
// tensor, a lazy concatenation: nothing is read before use.
func stackExperts(m *ir.Model) error {
	for _, g := range expertGroups(&m.Config) {
		if _, dup := m.Tensors[g.name]; dup {
			return fmt.Errorf("tensor %s: experts are stored one tensor each (%s), not stacked", g.name, expertName(g.name, 0))
		}
		parts := make([]*ir.Tensor, g.experts)
		for j := range parts {
			name := expertName(g.name, j)
			t, ok := m.Tensors[name]
			if !ok {
				return fmt.Errorf("missing tensor %s", name)
			}
			if len(t.Shape) != 2 {
				return fmt.Errorf("tensor %s has shape %v, want a matrix", name, t.Shape)
			}
			if j > 0 && (t.DType != parts[0].DType || !slices.Equal(t.Shape, parts[0].Shape)) {
				return fmt.Errorf("tensor %s is %v %v, but %s is %v %v: one layer's experts must match", name, t.DType, t.Shape, expertName(g.name, 0), parts[0].DType, parts[0].Shape)
			}
			parts[j] = t
			delete(m.Tensors, name)
		}
		name := g.name
		m.Tensors[name] = ir.LazyTensor(parts[0].DType, []int{g.experts, parts[0].Shape[0], parts[0].Shape[1]}, func() ([]byte, error) {
			var out []byte
			for j, p := range parts {
				b, err := p.Bytes()
				if err != nil {
					return nil, fmt.Errorf("reading %s: %w", expertName(name, j), err)
				}
				out = append(out, b...)
			}
			return out, nil
		})
	}
	// An expert beyond the config's count would otherwise pass unnoticed
	// (Validate reports unexpected names, but this says why).
	for name := range m.Tensors {
		if perExpertRE.MatchString(name) {
			return fmt.Errorf("tensor %s: no such expert in the config (%s)", name, expertCounts(&m.Config))
		}
	}
	return nil
}

// expertCounts describes the config's experts per layer, for messages.
func expertCounts(cfg *ir.Config) string {
	var parts []string
	for i, l := range cfg.Layers {
		if l.MoE() {
			parts = append(parts, fmt.Sprintf("layer %d: %d", i, l.Experts))
		}
	}
	if len(parts) == 0 {
		return "no mixture-of-experts layers"
	}
	return "experts per layer " + strings.Join(parts, ", ")
}

// splitExperts replaces, in a list of tensors to write, each stacked
// expert tensor by one tensor per expert, in expert order at its place.
// The stacked tensor is converted once and released when its last expert
// has been written.
func splitExperts(cfg *ir.Config, srcs []safetensors.Source) ([]safetensors.Source, error) {
	groups := expertGroups(cfg)
	if len(groups) == 0 {
		return srcs, nil
	}
	stacked := map[string]bool{}
	for _, g := range groups {
		stacked[g.name] = true
	}
	var out []safetensors.Source
	for _, s := range srcs {
		if !stacked[s.Name] {
			out = append(out, s)
			continue
		}
		if len(s.Shape) != 3 {
			return nil, fmt.Errorf("tensor %s has shape %v, want [experts, rows, cols]", s.Name, s.Shape)
		}
		e, rows, cols := s.Shape[0], s.Shape[1], s.Shape[2]
		sh := &sharedBytes{load: s.Data, users: e}
		size := rows * cols * s.DType.Size()
		for j := range e {
			out = append(out, safetensors.Source{Name: expertName(s.Name, j), DType: s.DType, Shape: []int{rows, cols},
				Data: func() ([]byte, error) { return sh.slice(j*size, (j+1)*size) }})
		}
	}
	return out, nil
}

// sharedBytes loads bytes once for several readers of slices of them and
// forgets them when each reader has read once (a reader coming back
// loads them again).
type sharedBytes struct {
	mu    sync.Mutex
	load  func() ([]byte, error)
	data  []byte
	users int
	left  int
}

func (s *sharedBytes) slice(begin, end int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		d, err := s.load()
		if err != nil {
			return nil, err
		}
		if end > len(d) {
			return nil, fmt.Errorf("stacked tensor holds %d bytes, want at least %d", len(d), end)
		}
		s.data, s.left = d, s.users
	}
	out := s.data[begin:end:end]
	if s.left--; s.left == 0 {
		s.data = nil
	}
	return out, nil
}

// parseMoE makes the layers the family routes mixtures of experts, as
// its transformers classes decide: Mixtral every layer, each expert
// intermediate_size wide, top-k always renormalized
// (MixtralSparseMoeBlock); Qwen-MoE the layers not in mlp_only_layers
// whose number (from 1) is a multiple of decoder_sparse_step, experts
// moe_intermediate_size wide, Qwen2-MoE with a shared expert
// (Qwen2MoeDecoderLayer). With whittle_layers the sizes are already per
// layer.
func parseMoE(f family, c *configJSON, cfg *ir.Config) error {
	mf := f.moe
	if mf == nil {
		for _, k := range []struct {
			key string
			set bool
		}{{"num_local_experts", c.NumLocalExperts != nil && *c.NumLocalExperts > 0}, {"num_experts", c.NumExperts != nil && *c.NumExperts > 0}} {
			if k.set {
				return errUnsupported("%s on %s (a dense family; its class has no experts)", k.key, f.arch)
			}
		}
		return nil
	}
	num := func(key string, v *int, def int) (int, error) {
		if v == nil {
			return def, nil
		}
		if *v < 0 {
			return 0, fmt.Errorf("%s must not be negative, got %d", key, *v)
		}
		return *v, nil
	}
	expertsKey, expertsVal := "num_local_experts", c.NumLocalExperts
	if mf.qwen {
		expertsKey, expertsVal = "num_experts", c.NumExperts
	}
	experts, err := num(expertsKey, expertsVal, mf.experts)
	if err != nil {
		return err
	}
	if cfg.ExpertsPerToken, err = num("num_experts_per_tok", c.NumExpertsPerTok, mf.perToken); err != nil {
		return err
	}
	cfg.NormTopK = true // Mixtral renormalizes without a key
	if mf.qwen {
		cfg.NormTopK = c.NormTopKProb != nil && *c.NormTopKProb
	}
	if c.WhittleLayers != nil {
		return nil
	}
	if !mf.qwen {
		if experts == 0 {
			return fmt.Errorf("%s must be positive for %s", expertsKey, f.architecture)
		}
		for i := range cfg.Layers {
			l := &cfg.Layers[i]
			l.Experts, l.ExpertMLP, l.MLP = experts, l.MLP, 0
		}
		return nil
	}
	expertMLP, err := num("moe_intermediate_size", c.MoEIntermediateSize, mf.expertMLP)
	if err != nil {
		return err
	}
	shared := 0
	if mf.shared {
		if shared, err = num("shared_expert_intermediate_size", c.SharedExpertIntermediateSize, mf.sharedMLP); err != nil {
			return err
		}
	}
	step := 1
	if c.DecoderSparseStep != nil {
		if step = *c.DecoderSparseStep; step <= 0 {
			return fmt.Errorf("decoder_sparse_step must be positive, got %d", step)
		}
	}
	for i := range cfg.Layers {
		if experts > 0 && (i+1)%step == 0 && !slices.Contains(c.MLPOnlyLayers, i) {
			l := &cfg.Layers[i]
			l.MLP, l.Experts, l.ExpertMLP, l.SharedMLP = 0, experts, expertMLP, shared
		}
	}
	return nil
}

// moeConfigKeys renders cfg's experts as the family's config.json keys
// and reports whether those keys (with the top-level sizes) express every
// layer; when not, MarshalConfig adds whittle_layers. Mixtures of experts
// the family's classes cannot compute are refused.
func moeConfigKeys(f family, cfg *ir.Config) (map[string]any, bool, error) {
	var moe, dense *ir.LayerConfig
	uniform := true
	var denseLayers []int
	for i, l := range cfg.Layers {
		s := l.Sizes()
		p := &dense
		if l.MoE() {
			p = &moe
		} else {
			denseLayers = append(denseLayers, i)
		}
		if *p == nil {
			*p = &s
		} else if **p != s {
			uniform = false
		}
	}
	mf := f.moe
	if mf == nil {
		if moe != nil {
			return nil, false, fmt.Errorf("%s has no mixture-of-experts layers (use a MoE family: mixtral, qwen2_moe, qwen3_moe)", f.architecture)
		}
		return nil, uniform, nil
	}
	if moe != nil && moe.SharedMLP > 0 && !mf.shared {
		return nil, false, fmt.Errorf("%s has no shared expert, but the config has one of %d neurons", f.architecture, moe.SharedMLP)
	}
	if !mf.qwen && !cfg.NormTopK {
		return nil, false, fmt.Errorf("%s always renormalizes the top-k router probabilities (norm_topk_prob must be true)", f.architecture)
	}
	if moe != nil && dense != nil {
		// One set of attention sizes at the top level for both kinds.
		a, b := *moe, *dense
		a.MLP, a.Experts, a.ExpertMLP, a.SharedMLP = 0, 0, 0, 0
		b.MLP = 0
		uniform = uniform && a == b
	}
	keys := map[string]any{"num_experts_per_tok": cfg.ExpertsPerToken, "output_router_logits": false}
	if !mf.qwen {
		// Dense layers among Mixtral's need whittle_layers.
		uniform = uniform && dense == nil
		keys["router_aux_loss_coef"] = 0.02
		keys["num_local_experts"] = 0
		if moe != nil {
			keys["num_local_experts"] = moe.Experts
			keys["intermediate_size"] = moe.ExpertMLP
		}
		return keys, uniform, nil
	}
	keys["router_aux_loss_coef"] = 0.001
	keys["norm_topk_prob"] = cfg.NormTopK
	keys["decoder_sparse_step"] = 1
	keys["mlp_only_layers"] = []int{}
	keys["num_experts"] = 0
	if moe != nil {
		keys["num_experts"] = moe.Experts
		keys["moe_intermediate_size"] = moe.ExpertMLP
		if denseLayers != nil {
			keys["mlp_only_layers"] = denseLayers
		}
		// Read only by dense layers; without any, the published
		// configs' value (top-k experts' width) is written.
		keys["intermediate_size"] = moe.ExpertMLP * cfg.ExpertsPerToken
		if mf.shared {
			keys["shared_expert_intermediate_size"] = moe.SharedMLP
		}
	}
	if dense != nil {
		keys["intermediate_size"] = dense.MLP
	}
	return keys, uniform, nil
}
