package pipeline

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/hcl/v2"

	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// PlanContext is what a pass sees while planning: architectures and
// tokenizers, no weights.
type PlanContext struct {
	Recipe *recipe.Recipe
	models map[string]ir.Config
	// toks holds each model slot's tokenizer (nil when the model has none)
	// and its source directory, for the error saying why.
	toks    map[string]planTokenizer
	scores  map[string]bool
	metrics map[string]map[string]int // scores slot → layer metric → block size
	pass    *recipe.Pass              // the pass being planned
	detail  string                    // what the pass being planned adds to the plan
}

type planTokenizer struct {
	tok    *tokenizer.Tokenizer
	source string
}

// Model returns the architecture in a model slot.
func (pc *PlanContext) Model(ref recipe.Ref) (ir.Config, error) {
	if ref.Kind != string(recipe.SlotModel) {
		return ir.Config{}, fmt.Errorf("%s.%s is not a model", ref.Kind, ref.Name)
	}
	c, ok := pc.models[ref.Name]
	if !ok {
		return ir.Config{}, fmt.Errorf("model.%s is not available at this point of the recipe", ref.Name)
	}
	return c.Clone(), nil
}

// HasScores reports whether a scores slot exists at this point.
func (pc *PlanContext) HasScores(ref recipe.Ref) bool { return pc.scores[ref.Name] }

// Tokenizer returns the tokenizer of a model slot, or the error a run would
// give for a model without one. A pass's output model keeps the tokenizer of
// the first model its configuration names (the student of a distillation).
func (pc *PlanContext) Tokenizer(ref recipe.Ref) (*tokenizer.Tokenizer, error) {
	if _, err := pc.Model(ref); err != nil {
		return nil, err
	}
	t := pc.toks[ref.Name]
	if t.tok == nil {
		return nil, missingTokenizer(ref, t.source)
	}
	return t.tok, nil
}

// SetLayerMetrics declares, for the scores-producing pass being planned,
// the layer metrics its table will hold and the block size each was
// measured with, so that later passes can check the names they use.
func (pc *PlanContext) SetLayerMetrics(blocks map[string]int) {
	if pc.pass != nil {
		pc.metrics[pc.pass.Into] = blocks
	}
}

// LayerMetrics returns what SetLayerMetrics declared for a scores slot;
// ok is false when its pass declared nothing (a plugin's pass, say).
func (pc *PlanContext) LayerMetrics(ref recipe.Ref) (blocks map[string]int, ok bool) {
	blocks, ok = pc.metrics[ref.Name]
	return blocks, ok
}

// Detail adds text that the plan prints under the stage of the pass being
// planned (the search pass lists its candidates there).
func (pc *PlanContext) Detail(text string) {
	if pc.pass != nil {
		pc.detail += text
	}
}

// Stage is one line of a plan: a declared model or a pass's result.
type Stage struct {
	Name   string
	Kind   string // "model" for declared models, else the pass kind
	Slot   string // the slot it produces
	Config *ir.Config
	Params ir.ParamCounts
	// ConfigOnly marks a declared model given as a config.json without
	// weights: it plans, but Run refuses it.
	ConfigOnly bool
	// Detail is what the pass added with PlanContext.Detail.
	Detail string
}

// Plan is the static dry run of a recipe.
type Plan struct {
	Stages []Stage
}

// MakePlan derives every stage's architecture from model headers and the
// passes' static rules; no weights are read. Every check a pass can make
// without running lives in its Plan, so that a plan that succeeds does not
// fail later for a reason known now.
func MakePlan(r *recipe.Recipe, reg *Registry) (*Plan, error) {
	pc := &PlanContext{Recipe: r, models: map[string]ir.Config{}, toks: map[string]planTokenizer{},
		scores: map[string]bool{}, metrics: map[string]map[string]int{}}
	plan := &Plan{}
	for _, m := range r.Models {
		opts := loadOptions(m)
		opts.AllowConfigOnly = true // planning needs no weights
		model, err := modelio.Load(m.Path, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: model %q: %w", At(m.DeclRange), m.Name, err)
		}
		configOnly := model.ConfigOnly()
		cfg := model.Config.Clone()
		pc.toks[m.Name] = planTokenizer{tok: model.Tokenizer, source: model.Source}
		model.Close()
		pc.models[m.Name] = cfg
		plan.Stages = append(plan.Stages, Stage{Name: m.Name, Kind: "model", Slot: "model." + m.Name, Config: &cfg, Params: cfg.Params(), ConfigOnly: configOnly})
	}
	for _, p := range r.Passes {
		impl, ok := reg.Lookup(p.Kind)
		if !ok {
			return nil, fmt.Errorf("%s: unknown pass kind %q", At(p.DeclRange), p.Kind)
		}
		pc.pass, pc.detail = p, ""
		cfg, err := impl.Plan(pc, p)
		pc.pass = nil
		if err != nil {
			return nil, fmt.Errorf("%s: pass %q: %w", At(p.DeclRange), p.Name, err)
		}
		st := Stage{Name: p.Name, Kind: p.Kind, Detail: pc.detail}
		switch impl.Spec().Produces {
		case recipe.SlotModel:
			if cfg == nil {
				return nil, fmt.Errorf("%s: pass %q planned no model", At(p.DeclRange), p.Name)
			}
			if err := cfg.Check(); err != nil {
				return nil, fmt.Errorf("%s: pass %q would produce an invalid model: %w", At(p.DeclRange), p.Name, err)
			}
			pc.toks[p.Into] = pc.inheritedTokenizer(p)
			pc.models[p.Into] = cfg.Clone()
			st.Slot = "model." + p.Into
		case recipe.SlotScores:
			pc.scores[p.Into] = true
			st.Slot = "scores." + p.Into
		}
		if cfg != nil {
			st.Config = cfg
			st.Params = cfg.Params()
		}
		plan.Stages = append(plan.Stages, st)
	}
	return plan, nil
}

// inheritedTokenizer is the tokenizer of the first model slot p's
// configuration names (computed before p's output replaces any slot).
func (pc *PlanContext) inheritedTokenizer(p *recipe.Pass) planTokenizer {
	for _, ref := range collectRefs(p.Config) {
		if ref.Kind == string(recipe.SlotModel) {
			if t, ok := pc.toks[ref.Name]; ok {
				return t
			}
		}
	}
	return planTokenizer{}
}

func loadOptions(m *recipe.Model) modelio.LoadOptions {
	opts := modelio.LoadOptions{Tokenizer: m.Tokenizer}
	if m.Format != "" {
		opts.Format, _ = modelio.ParseFormat(m.Format)
	}
	return opts
}

// Describe summarizes an architecture in one line: layers, hidden,
// heads/KV heads, MLP width (ranges when layers differ).
func Describe(c *ir.Config) string {
	all := func(ir.LayerConfig) bool { return true }
	moe := func(l ir.LayerConfig) bool { return l.MoE() }
	dense := func(l ir.LayerConfig) bool { return !l.MoE() }
	heads, kv := span(c, all, func(l ir.LayerConfig) int { return l.Heads }), span(c, all, func(l ir.LayerConfig) int { return l.KVHeads })
	s := fmt.Sprintf("layers=%d hidden=%d heads=%s/%s", len(c.Layers), c.Hidden, heads, kv)
	if mlp := span(c, dense, func(l ir.LayerConfig) int { return l.MLP }); mlp != "-" {
		s += " mlp=" + mlp
	}
	if experts := span(c, moe, func(l ir.LayerConfig) int { return l.Experts }); experts != "-" {
		// Mixtures of experts: experts × each one's width, routed top-k.
		s += fmt.Sprintf(" experts=%sx%s top-%d", experts, span(c, moe, func(l ir.LayerConfig) int { return l.ExpertMLP }), c.ExpertsPerToken)
		if shared := span(c, moe, func(l ir.LayerConfig) int { return l.SharedMLP }); shared != "0" {
			s += " shared=" + shared
		}
	}
	return s
}

// span is the range of f over the layers that pass keep, "-" for none.
func span(c *ir.Config, keep func(ir.LayerConfig) bool, f func(ir.LayerConfig) int) string {
	first := true
	var lo, hi int
	for _, l := range c.Layers {
		if !keep(l) {
			continue
		}
		if first {
			lo, hi, first = f(l), f(l), false
		}
		lo, hi = min(lo, f(l)), max(hi, f(l))
	}
	switch {
	case first:
		return "-"
	case lo == hi:
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d..%d", lo, hi)
}

// Write prints the plan as a table.
func (p *Plan) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tKIND\tPRODUCES\tARCHITECTURE\tPARAMS")
	for _, s := range p.Stages {
		arch, params := "-", "-"
		if s.Config != nil {
			arch = Describe(s.Config)
			params = FormatCount(s.Params.Total)
			if a := s.Params.Active; a != s.Params.Total {
				params += " (active " + FormatCount(a) + ")"
			}
		}
		slot := s.Slot
		if slot == "" {
			slot = "-"
		}
		kind := s.Kind
		if s.ConfigOnly {
			kind += " (config only)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, kind, slot, arch, params)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range p.Stages {
		if s.Detail != "" {
			if _, err := fmt.Fprintf(w, "\n%s:\n%s", s.Name, s.Detail); err != nil {
				return err
			}
		}
	}
	return nil
}

// FormatCount prints a parameter count with thousands separators.
func FormatCount(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && c != '-' && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// At renders a recipe position as file:line:col.
func At(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}
