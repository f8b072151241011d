package recipe

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Recipe is a loaded, evaluated and checked recipe.
type Recipe struct {
	Path   string // absolute path of the recipe file
	Dir    string // its directory; relative paths in the recipe resolve here
	Source []byte // exact bytes as read (the pipeline hashes them)

	// Files holds the parsed source under the name diagnostics use, for
	// WriteDiagnostics.
	Files map[string]*hcl.File

	Variables map[string]cty.Value // final values after defaults and overrides

	Models   []*Model
	Datasets []*Dataset
	Tasks    []*Task
	Backends []*Backend
	Passes   []*Pass
	Outputs  []*Output
}

// Model is a `model "name"` block: an input checkpoint.
type Model struct {
	Name      string
	Path      string // absolute
	Tokenizer string // absolute; "" when absent
	Format    string // hf | gguf | llama2c; "" means the loader auto-detects

	DeclRange      hcl.Range
	PathRange      hcl.Range // the path attribute's value, for CheckFiles and later diagnostics
	TokenizerRange hcl.Range
}

// Dataset is a `dataset "name"` block.
type Dataset struct {
	Name               string
	Path               string  // absolute
	Format             string  // text | jsonl | instruct; defaults from the file extension
	ValidationFraction float64 // default 0.1, in [0, 1)
	Seed               int64   // default 0

	DeclRange hcl.Range
	PathRange hcl.Range
}

// Task is a `task "name"` block: an evaluation set.
type Task struct {
	Name    string
	Path    string // absolute
	Limit   int    // 0 = all examples
	FewShot int

	DeclRange hcl.Range
	PathRange hcl.Range
}

// Backend is a `backend "name"` block.
type Backend struct {
	Name   string
	Plugin string // as written, or absolute when it contains a path separator
	SHA256 string
	// Config holds every other attribute, evaluated.
	Config map[string]cty.Value

	DeclRange hcl.Range
}

// Pass is one `pass "<kind>"` block, in recipe order.
type Pass struct {
	Kind    string
	Name    string // `name` attribute; default "<kind>", or "<kind>-<n>" (n from 1) when the kind repeats
	Index   int    // position among passes, 0-based
	Into    string // the slot it produces; "" when the kind produces nothing
	Backend *Ref   // optional `backend = backend.x`
	Config  any    // what KindSpec.NewConfig returned, decoded

	DeclRange hcl.Range
	IntoRange hcl.Range // the into attribute's value, when present
	// Body is the block's body without name, into, backend and for_each:
	// what Config was decoded from, for passes that read more of it
	// themselves. The instances of a for_each block share it.
	Body hcl.Body
	// EachKey is this instance's each.key when the block sets for_each.
	EachKey string
}

// Slot returns the reference this pass produces, e.g. model.student, or the
// zero Ref when it produces nothing.
func (p *Pass) Slot(reg *Registry) Ref {
	spec, ok := reg.Lookup(p.Kind)
	if !ok || spec.Produces == "" || p.Into == "" {
		return Ref{}
	}
	return Ref{Kind: string(spec.Produces), Name: p.Into}
}

// dedupDiagnostics drops repeats of a diagnostic: the instances of a
// for_each pass block share their expressions, and a problem in one is
// reported once.
func dedupDiagnostics(diags hcl.Diagnostics) hcl.Diagnostics {
	type key struct {
		sev             hcl.DiagnosticSeverity
		summary, detail string
		rng             hcl.Range
	}
	seen := map[key]bool{}
	out := diags[:0]
	for _, d := range diags {
		k := key{sev: d.Severity, summary: d.Summary, detail: d.Detail}
		if d.Subject != nil {
			k.rng = *d.Subject
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, d)
	}
	return out
}

// Output is an `output "name"` block: a model slot written when the run ends.
type Output struct {
	Name   string
	Model  Ref
	Format string // hf | gguf | llama2c
	Path   string // as written: relative to the run directory unless absolute
	DType  string // "" = keep the model's dtype; else f32 | f16 | bf16 (ir.ParseDType spellings)

	DeclRange hcl.Range
}

// Load reads, parses, evaluates and checks the recipe at path. vars are
// `-var name=value` overrides. It returns every diagnostic found, sorted by
// position; the recipe is non-nil whenever the file could be read, but is
// only complete when diags.HasErrors() is false.
func Load(path string, vars map[string]string, reg *Registry) (*Recipe, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read recipe",
			Detail:   err.Error(),
		}}
	}
	return Parse(path, src, vars, reg)
}

// Parse is Load for a recipe already in memory. filename names it in
// diagnostics, and its directory is the recipe directory.
func Parse(filename string, src []byte, vars map[string]string, reg *Registry) (*Recipe, hcl.Diagnostics) {
	abs, err := filepath.Abs(filename)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid recipe path",
			Detail:   fmt.Sprintf("%s: %v", filename, err),
		}}
	}
	r := &Recipe{
		Path:      abs,
		Dir:       filepath.Dir(abs),
		Source:    src,
		Files:     map[string]*hcl.File{},
		Variables: map[string]cty.Value{},
	}
	l := newLoader(r, filename, vars, reg)
	l.load()
	l.diags = dedupDiagnostics(l.diags)
	sortDiagnostics(l.diags)
	return r, l.diags
}
