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
)

// PlanContext is what a pass sees while planning: architectures only.
type PlanContext struct {
	Recipe *recipe.Recipe
	models map[string]ir.Config
	scores map[string]bool
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

// Stage is one line of a plan: a declared model or a pass's result.
type Stage struct {
	Name   string
	Kind   string // "model" for declared models, else the pass kind
	Slot   string // the slot it produces
	Config *ir.Config
	Params ir.ParamCounts
}

// Plan is the static dry run of a recipe.
type Plan struct {
	Stages []Stage
}

// MakePlan derives every stage's architecture from model headers and the
// passes' static rules; no weights are read.
func MakePlan(r *recipe.Recipe, reg *Registry) (*Plan, error) {
	pc := &PlanContext{Recipe: r, models: map[string]ir.Config{}, scores: map[string]bool{}}
	plan := &Plan{}
	for _, m := range r.Models {
		model, err := modelio.Load(m.Path, loadOptions(m))
		if err != nil {
			return nil, fmt.Errorf("%s: model %q: %w", At(m.DeclRange), m.Name, err)
		}
		cfg := model.Config.Clone()
		model.Close()
		pc.models[m.Name] = cfg
		plan.Stages = append(plan.Stages, Stage{Name: m.Name, Kind: "model", Slot: "model." + m.Name, Config: &cfg, Params: cfg.Params()})
	}
	for _, p := range r.Passes {
		impl, ok := reg.Lookup(p.Kind)
		if !ok {
			return nil, fmt.Errorf("%s: unknown pass kind %q", At(p.DeclRange), p.Kind)
		}
		cfg, err := impl.Plan(pc, p)
		if err != nil {
			return nil, fmt.Errorf("%s: pass %q: %w", At(p.DeclRange), p.Name, err)
		}
		st := Stage{Name: p.Name, Kind: p.Kind}
		switch impl.Spec().Produces {
		case recipe.SlotModel:
			if cfg == nil {
				return nil, fmt.Errorf("%s: pass %q planned no model", At(p.DeclRange), p.Name)
			}
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
	heads, kv, mlp := span(c, func(l ir.LayerConfig) int { return l.Heads }), span(c, func(l ir.LayerConfig) int { return l.KVHeads }), span(c, func(l ir.LayerConfig) int { return l.MLP })
	return fmt.Sprintf("layers=%d hidden=%d heads=%s/%s mlp=%s", len(c.Layers), c.Hidden, heads, kv, mlp)
}

func span(c *ir.Config, f func(ir.LayerConfig) int) string {
	if len(c.Layers) == 0 {
		return "-"
	}
	lo, hi := f(c.Layers[0]), f(c.Layers[0])
	for _, l := range c.Layers {
		lo, hi = min(lo, f(l)), max(hi, f(l))
	}
	if lo == hi {
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
		}
		slot := s.Slot
		if slot == "" {
			slot = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, slot, arch, params)
	}
	return tw.Flush()
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
