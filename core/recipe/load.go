package recipe

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "model", LabelNames: []string{"name"}},
		{Type: "dataset", LabelNames: []string{"name"}},
		{Type: "task", LabelNames: []string{"name"}},
		{Type: "backend", LabelNames: []string{"name"}},
		{Type: "pass", LabelNames: []string{"kind"}},
		{Type: "output", LabelNames: []string{"name"}},
	},
}

var (
	variableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "type"}, {Name: "default"}, {Name: "description"},
	}}
	modelSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "path", Required: true}, {Name: "tokenizer"}, {Name: "format"},
	}}
	datasetSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "path", Required: true}, {Name: "format"}, {Name: "validation_fraction"}, {Name: "seed"},
	}}
	taskSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "path", Required: true}, {Name: "limit"}, {Name: "few_shot"},
	}}
	outputSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "model", Required: true}, {Name: "format", Required: true}, {Name: "path", Required: true}, {Name: "dtype"},
	}}
)

// Accepted spellings of enumerated attributes, mapped to the canonical one.
var (
	modelFormats = map[string]string{"hf": "hf", "gguf": "gguf", "llama2c": "llama2c", "safetensors": "hf", "huggingface": "hf", "bin": "llama2c"}
	// outputFormats adds the formats whittle writes but reads as another
	// (a DeciLM directory reads as HF).
	outputFormats  = map[string]string{"hf": "hf", "gguf": "gguf", "llama2c": "llama2c", "safetensors": "hf", "huggingface": "hf", "bin": "llama2c", "decilm": "decilm"}
	datasetFormats = map[string]string{"text": "text", "jsonl": "jsonl", "instruct": "instruct"}
	dtypes         = map[string]string{"f32": "f32", "f16": "f16", "bf16": "bf16", "float32": "f32", "float16": "f16", "bfloat16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}
)

// DefaultValidationFraction is a dataset's held-out share when the block does
// not set validation_fraction.
const DefaultValidationFraction = 0.1

type varDecl struct {
	block *hcl.Block
}

type localDef struct {
	attr  *hcl.Attribute
	state int // 0 unvisited, 1 on the stack, 2 done
}

// passInfo is what the first sweep over pass blocks learns: enough to say,
// while evaluating any pass, which later pass produces a slot.
type passInfo struct {
	block    *hcl.Block
	entry    *kindEntry // nil for an unknown kind
	name     string
	nameRng  hcl.Range
	into     string
	produces SlotKind
	decl     hcl.Range
	common   *hcl.BodyContent
	remain   hcl.Body
	pass     *Pass
	// each is {key, value} of this instance of a for_each pass block;
	// cty.NilVal otherwise.
	each cty.Value
}

// loader evaluates one recipe file. Every step records diagnostics and goes
// on, so that one run reports every problem it can.
type loader struct {
	r        *Recipe
	filename string
	vars     map[string]string
	reg      *Registry
	funcs    map[string]function.Function
	diags    hcl.Diagnostics

	varDecls    map[string]*varDecl
	varVals     map[string]cty.Value
	varFailed   map[string]bool
	localDefs   map[string]*localDef
	localVals   map[string]cty.Value
	localFailed map[string]bool
	localStack  []string

	models   map[string]hcl.Range       // model block names
	declared map[string]map[string]bool // dataset, task, backend block names
	passes   []*passInfo
}

func newLoader(r *Recipe, filename string, vars map[string]string, reg *Registry) *loader {
	return &loader{
		r: r, filename: filename, vars: vars, reg: reg,
		funcs:       functions(r.Dir),
		varDecls:    map[string]*varDecl{},
		varVals:     map[string]cty.Value{},
		varFailed:   map[string]bool{},
		localDefs:   map[string]*localDef{},
		localVals:   map[string]cty.Value{},
		localFailed: map[string]bool{},
		models:      map[string]hcl.Range{},
		declared:    map[string]map[string]bool{"dataset": {}, "task": {}, "backend": {}},
	}
}

func (l *loader) load() {
	file, diags := hclsyntax.ParseConfig(l.r.Source, l.filename, hcl.InitialPos)
	l.diags = append(l.diags, diags...)
	if file != nil {
		l.r.Files[l.filename] = file
	}
	// After a syntax error the tree is partial; what follows would only
	// report its holes.
	if diags.HasErrors() || file == nil {
		return
	}
	content, diags := file.Body.Content(rootSchema)
	l.diags = append(l.diags, diags...)
	byType := map[string][]*hcl.Block{}
	for _, b := range content.Blocks {
		byType[b.Type] = append(byType[b.Type], b)
	}

	l.variables(l.unique(byType["variable"]))
	l.locals(byType["locals"])
	models := l.unique(byType["model"])
	for _, b := range models {
		l.models[b.Labels[0]] = b.DefRange
	}
	datasets, tasks, backends := l.unique(byType["dataset"]), l.unique(byType["task"]), l.unique(byType["backend"])
	for kind, bs := range map[string][]*hcl.Block{"dataset": datasets, "task": tasks, "backend": backends} {
		for _, b := range bs {
			l.declared[kind][b.Labels[0]] = true
		}
	}
	for _, b := range models {
		l.model(b)
	}
	for _, b := range datasets {
		l.dataset(b)
	}
	for _, b := range tasks {
		l.task(b)
	}
	for _, b := range backends {
		l.backend(b)
	}
	l.scanPasses(byType["pass"])
	l.decodePasses()
	for _, b := range l.unique(byType["output"]) {
		l.output(b)
	}
	l.checkOutputPaths()
	l.r.Variables = l.varVals
}

// unique drops, with a diagnostic, blocks whose name is not an identifier
// or repeats an earlier block of the same type.
func (l *loader) unique(blocks []*hcl.Block) []*hcl.Block {
	seen := map[string]hcl.Range{}
	var out []*hcl.Block
	for _, b := range blocks {
		if len(b.Labels) != 1 {
			continue
		}
		name, rng := b.Labels[0], b.LabelRanges[0]
		if !hclsyntax.ValidIdentifier(name) {
			l.errorf(rng, fmt.Sprintf("Invalid %s name", b.Type), "%q is not a valid name; a name starts with a letter or underscore and has only letters, digits, underscores and dashes.", name)
			continue
		}
		if first, dup := seen[name]; dup {
			l.errorf(rng, fmt.Sprintf("Duplicate %s block", b.Type), "A %s named %q is already declared at %s.", b.Type, name, at(first))
			continue
		}
		seen[name] = b.DefRange
		out = append(out, b)
	}
	return out
}

// constCtx is the context of values that must not depend on anything:
// variable defaults and descriptions.
func (l *loader) constCtx() *hcl.EvalContext { return &hcl.EvalContext{Functions: l.funcs} }

func (l *loader) variables(blocks []*hcl.Block) {
	for _, b := range blocks {
		l.varDecls[b.Labels[0]] = &varDecl{block: b}
	}
	for _, name := range keysOf(l.vars) {
		if _, ok := l.varDecls[name]; !ok {
			names := keysOf(l.varDecls)
			l.diags = append(l.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Undeclared variable",
				Detail:   fmt.Sprintf("-var %s=...: the recipe declares no variable %q.%s%s", name, name, available("Declared variables", names), didYouMean(name, names, "")),
			})
		}
	}
	for _, b := range blocks {
		name := b.Labels[0]
		v, ok := l.variable(b)
		if ok {
			l.varVals[name] = v
		} else {
			l.varFailed[name] = true
		}
	}
}

func (l *loader) variable(b *hcl.Block) (cty.Value, bool) {
	name := b.Labels[0]
	content, diags := b.Body.Content(variableSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	ty, typed := cty.DynamicPseudoType, false
	if a := content.Attributes["type"]; a != nil {
		t, diags := typeexpr.TypeConstraint(a.Expr)
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			return cty.NilVal, false
		}
		ty, typed = t, true
	}
	if a := content.Attributes["description"]; a != nil {
		v, diags := a.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		if !diags.HasErrors() && (v.IsNull() || !v.Type().Equals(cty.String)) {
			l.errorf(a.Expr.Range(), `Invalid value for "description"`, "The description must be a string.")
		}
	}
	def, hasDef := cty.NilVal, false
	if a := content.Attributes["default"]; a != nil {
		v, diags := a.Expr.Value(l.constCtx())
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			return cty.NilVal, false
		}
		if typed {
			cv, err := convert.Convert(v, ty)
			if err != nil {
				l.errorf(a.Expr.Range(), "Invalid default value for variable", "Variable %q has type %s: %s.", name, typeexpr.TypeString(ty), describeConvErr(err))
				return cty.NilVal, false
			}
			v = cv
		}
		def, hasDef = v, true
	}
	if raw, over := l.vars[name]; over {
		v, err := parseOverride(raw, ty, typed, def, hasDef)
		if err != nil {
			want := ty
			if want == cty.DynamicPseudoType && hasDef && !def.IsNull() {
				want = def.Type()
			}
			l.errorf(b.DefRange, "Invalid value for variable", "-var %s=%s: %s; %s.", name, raw, strings.TrimSuffix(err.Error(), "."), overrideHint(name, want))
			return cty.NilVal, false
		}
		return v, ok
	}
	if !hasDef {
		l.errorf(b.DefRange, "Missing value for variable", "Variable %q has no default; set it with -var %s=<value>.", name, name)
		return cty.NilVal, false
	}
	return def, ok
}

// parseOverride reads a -var value as the variable's type: strings as
// written, numbers and bools from their text, anything else as an HCL
// constant expression such as [1, 2] or {a = "b"}. An untyped variable
// takes the type of a primitive default, and is a string without one.
func parseOverride(raw string, ty cty.Type, typed bool, def cty.Value, hasDef bool) (cty.Value, error) {
	if !typed || ty == cty.DynamicPseudoType {
		switch {
		case !hasDef || def.IsNull() || def.Type() == cty.String:
			return cty.StringVal(raw), nil
		case def.Type().IsPrimitiveType():
			ty = def.Type()
		}
	}
	switch {
	case ty == cty.String:
		return cty.StringVal(raw), nil
	case ty.IsPrimitiveType():
		v, err := convert.Convert(cty.StringVal(strings.TrimSpace(raw)), ty)
		if err != nil {
			return cty.NilVal, fmt.Errorf("variable has type %s: %s", typeexpr.TypeString(ty), describeConvErr(err))
		}
		return v, nil
	}
	// What a complex value must be, said first: "x" for a list parses as
	// a variable reference, and HCL's own message about that misleads.
	want := "a value"
	if ty != cty.DynamicPseudoType {
		want = "a " + typeexpr.TypeString(ty) + " value"
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), "-var", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("expected %s in HCL syntax, which this is not (%s)", want, oneLine(diags[0].Summary+": "+diags[0].Detail))
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("expected %s in HCL syntax; this is not a constant (strings inside lists and maps need quotes)", want)
	}
	if ty == cty.DynamicPseudoType {
		return v, nil
	}
	v, err := convert.Convert(v, ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("variable has type %s: %s", typeexpr.TypeString(ty), describeConvErr(err))
	}
	return v, nil
}

func (l *loader) locals(blocks []*hcl.Block) {
	var order []string
	for _, b := range blocks {
		attrs, diags := b.Body.JustAttributes()
		l.diags = append(l.diags, diags...)
		for _, a := range sortedAttrs(attrs) {
			if d, dup := l.localDefs[a.Name]; dup {
				l.errorf(a.NameRange, "Duplicate local value", "A local value named %q is already defined at %s.", a.Name, at(d.attr.NameRange))
				continue
			}
			l.localDefs[a.Name] = &localDef{attr: a}
			order = append(order, a.Name)
		}
	}
	for _, name := range order {
		l.local(name)
	}
}

// local evaluates one local value after those it refers to, depth first,
// and reports a cycle once, at the local where the walk re-entered it.
func (l *loader) local(name string) (ok bool) {
	d := l.localDefs[name]
	switch d.state {
	case 2:
		return !l.localFailed[name]
	case 1:
		i := 0
		for l.localStack[i] != name {
			i++
		}
		cycle := append(append([]string{}, l.localStack[i:]...), name)
		for j := range cycle {
			cycle[j] = "local." + cycle[j]
		}
		l.errorf(d.attr.NameRange, "Cycle in local values", "%s refer to each other: %s.", "These local values", strings.Join(cycle, " → "))
		for _, n := range l.localStack[i:] {
			l.localFailed[n] = true
		}
		return false
	}
	d.state = 1
	l.localStack = append(l.localStack, name)
	ok = true
	sc := declScope("locals")
	for _, t := range d.attr.Expr.Variables() {
		if t.RootName() != "local" || len(t) < 2 {
			continue
		}
		if a, isAttr := t[1].(hcl.TraverseAttr); isAttr {
			if _, declared := l.localDefs[a.Name]; declared && !l.local(a.Name) {
				ok = false
			}
		}
	}
	l.localStack = l.localStack[:len(l.localStack)-1]
	d.state = 2
	if ok && !l.localFailed[name] {
		var v cty.Value
		if v, ok = l.eval(d.attr.Expr, sc); ok {
			l.localVals[name] = v
		}
	}
	if !ok || l.localFailed[name] {
		l.localFailed[name] = true
		return false
	}
	return true
}

func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Range.Start.Byte < out[j].Range.Start.Byte })
	return out
}

// abs resolves a recipe path against the recipe directory.
func (l *loader) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.r.Dir, p)
}

// pathAttr evaluates a required, non-empty path and resolves it.
func (l *loader) pathAttr(a *hcl.Attribute, sc *scope) (string, bool) {
	s, ok := l.evalString(a, sc)
	if !ok {
		return "", false
	}
	if s == "" {
		l.errorf(a.Expr.Range(), fmt.Sprintf("Invalid value for %q", a.Name), "The path must not be empty.")
		return "", false
	}
	return l.abs(s), true
}

// enumAttr evaluates a string that must be one of allowed's keys and returns
// its canonical spelling.
func (l *loader) enumAttr(a *hcl.Attribute, sc *scope, allowed map[string]string, canonical []string) (string, bool) {
	s, ok := l.evalString(a, sc)
	if !ok {
		return "", false
	}
	if c, ok := allowed[strings.ToLower(s)]; ok {
		return c, true
	}
	l.errorf(a.Expr.Range(), fmt.Sprintf("Invalid value for %q", a.Name), "%q is not one of %s.%s", s, strings.Join(canonical, ", "), didYouMean(strings.ToLower(s), keysOf(allowed), ""))
	return "", false
}

func (l *loader) model(b *hcl.Block) {
	content, diags := b.Body.Content(modelSchema)
	l.diags = append(l.diags, diags...)
	m := &Model{Name: b.Labels[0], DeclRange: b.DefRange}
	sc := declScope("a model block")
	if a := content.Attributes["path"]; a != nil {
		m.Path, _ = l.pathAttr(a, sc)
		m.PathRange = a.Expr.Range()
	}
	if a := content.Attributes["tokenizer"]; a != nil {
		m.Tokenizer, _ = l.pathAttr(a, sc)
		m.TokenizerRange = a.Expr.Range()
	}
	if a := content.Attributes["format"]; a != nil {
		m.Format, _ = l.enumAttr(a, sc, modelFormats, []string{"hf", "gguf", "llama2c"})
	}
	l.r.Models = append(l.r.Models, m)
}

func (l *loader) dataset(b *hcl.Block) {
	content, diags := b.Body.Content(datasetSchema)
	l.diags = append(l.diags, diags...)
	d := &Dataset{Name: b.Labels[0], ValidationFraction: DefaultValidationFraction, DeclRange: b.DefRange}
	sc := declScope("a dataset block")
	if a := content.Attributes["path"]; a != nil {
		d.Path, _ = l.pathAttr(a, sc)
		d.PathRange = a.Expr.Range()
	}
	if a := content.Attributes["format"]; a != nil {
		d.Format, _ = l.enumAttr(a, sc, datasetFormats, []string{"text", "jsonl", "instruct"})
	} else if d.Path != "" {
		d.Format = "text"
		if ext := strings.ToLower(filepath.Ext(d.Path)); ext == ".jsonl" || ext == ".json" {
			d.Format = "jsonl"
		}
	}
	if a := content.Attributes["validation_fraction"]; a != nil {
		var f float64
		if l.evalAs(a, sc, cty.Number, &f) {
			if f < 0 || f >= 1 {
				l.errorf(a.Expr.Range(), `Invalid value for "validation_fraction"`, "%g is outside [0, 1).", f)
			} else {
				d.ValidationFraction = f
			}
		}
	}
	if a := content.Attributes["seed"]; a != nil {
		l.evalAs(a, sc, cty.Number, &d.Seed)
	}
	l.r.Datasets = append(l.r.Datasets, d)
}

func (l *loader) task(b *hcl.Block) {
	content, diags := b.Body.Content(taskSchema)
	l.diags = append(l.diags, diags...)
	t := &Task{Name: b.Labels[0], DeclRange: b.DefRange}
	sc := declScope("a task block")
	if a := content.Attributes["path"]; a != nil {
		t.Path, _ = l.pathAttr(a, sc)
		t.PathRange = a.Expr.Range()
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"limit", &t.Limit}, {"few_shot", &t.FewShot}} {
		a := content.Attributes[f.name]
		if a == nil {
			continue
		}
		var n int
		if l.evalAs(a, sc, cty.Number, &n) {
			if n < 0 {
				l.errorf(a.Expr.Range(), fmt.Sprintf("Invalid value for %q", f.name), "%d is negative.", n)
			} else {
				*f.dst = n
			}
		}
	}
	l.r.Tasks = append(l.r.Tasks, t)
}

func (l *loader) backend(b *hcl.Block) {
	attrs, diags := b.Body.JustAttributes()
	l.diags = append(l.diags, diags...)
	be := &Backend{Name: b.Labels[0], Config: map[string]cty.Value{}, DeclRange: b.DefRange}
	sc := declScope("a backend block")
	for _, a := range sortedAttrs(attrs) {
		switch a.Name {
		case "plugin":
			if s, ok := l.evalString(a, sc); ok {
				if s == "" {
					l.errorf(a.Expr.Range(), `Invalid value for "plugin"`, "The plugin must not be empty.")
				} else if strings.ContainsRune(s, '/') || strings.ContainsRune(s, os.PathSeparator) {
					s = l.abs(s)
				}
				be.Plugin = s
			}
		case "sha256":
			if s, ok := l.evalString(a, sc); ok {
				if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
					l.errorf(a.Expr.Range(), `Invalid value for "sha256"`, "%q is not a SHA-256 digest (64 hexadecimal digits).", s)
				} else {
					be.SHA256 = strings.ToLower(s)
				}
			}
		default:
			if v, ok := l.eval(a.Expr, sc); ok {
				be.Config[a.Name] = v
			}
		}
	}
	l.r.Backends = append(l.r.Backends, be)
}

// finalScope is what outputs see: every slot any pass produces.
func (l *loader) finalScope() *scope {
	sc := l.passScope(len(l.passes))
	sc.where = "an output block"
	return sc
}

func (l *loader) output(b *hcl.Block) {
	content, diags := b.Body.Content(outputSchema)
	l.diags = append(l.diags, diags...)
	o := &Output{Name: b.Labels[0], DeclRange: b.DefRange}
	sc := l.finalScope()
	if a := content.Attributes["model"]; a != nil {
		if v, ok := l.eval(a.Expr, sc); ok {
			if msg := l.refCheck(v, []string{"model"}, sc); msg != "" {
				l.errorf(a.Expr.Range(), "Invalid reference", "%s", msg)
			} else {
				_, o.Model.Name, _ = refParts(v)
				o.Model.Kind = "model"
			}
		}
	}
	if a := content.Attributes["format"]; a != nil {
		o.Format, _ = l.enumAttr(a, sc, outputFormats, []string{"hf", "gguf", "llama2c", "decilm"})
	}
	if a := content.Attributes["path"]; a != nil {
		if s, ok := l.evalString(a, sc); ok {
			if s == "" {
				l.errorf(a.Expr.Range(), `Invalid value for "path"`, "The path must not be empty.")
			} else {
				o.Path = s
			}
		}
	}
	if a := content.Attributes["dtype"]; a != nil {
		var ok bool
		o.DType, ok = l.enumAttr(a, sc, dtypes, []string{"f32", "f16", "bf16", "q8_0", "q4_0"})
		if ok && strings.HasPrefix(o.DType, "q") && o.Format != "" && o.Format != "gguf" {
			l.errorf(a.Expr.Range(), `Invalid value for "dtype"`, "%s is a GGUF quantization; format %q holds f32, f16 or bf16.", o.DType, o.Format)
		}
	}
	l.r.Outputs = append(l.r.Outputs, o)
}

// checkOutputPaths rejects two outputs writing the same file.
func (l *loader) checkOutputPaths() {
	seen := map[string]*Output{}
	for _, o := range l.r.Outputs {
		if o.Path == "" {
			continue
		}
		key := filepath.Clean(o.Path)
		if first, dup := seen[key]; dup {
			l.errorf(o.DeclRange, "Duplicate output path", "Output %q writes %q, as output %q at %s does.", o.Name, o.Path, first.Name, at(first.DeclRange))
			continue
		}
		seen[key] = o
	}
}
