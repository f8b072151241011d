package recipe

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// scope is where an expression is evaluated: which references it may use
// and, for pass and output bodies, which slots exist at that point.
type scope struct {
	where string // "a dataset block", for messages
	// blocks allows the block namespaces (model., scores., dataset., task.,
	// backend.); declarations and locals see only var. and local.
	blocks bool
	// pass is the index of the pass being evaluated, len(passes) for
	// outputs; it decides which pass outputs are "later".
	pass   int
	models map[string]bool
	scores map[string]bool
	// poisoned slot names come from passes of unknown kind; references to
	// them are not diagnosed again.
	poisoned map[string]bool
	// each is the instance of a for_each pass block being evaluated
	// ({key, value}), cty.NilVal outside one.
	each cty.Value
}

// declScope is the scope of declarations: var. and local. only.
func declScope(where string) *scope { return &scope{where: where} }

// roots are every valid first name of a reference, for suggestions.
var roots = append([]string{"var", "local", "each"}, namespaces...)

// checkRefs reports every bad reference in expr and returns whether all
// were good. A reference to a value that failed earlier (a variable without
// a value, a local in a cycle) is bad but not reported again.
func (l *loader) checkRefs(expr hcl.Expression, sc *scope) bool {
	ok := true
	for _, t := range expr.Variables() {
		if !l.checkRef(t, sc) {
			ok = false
		}
	}
	return ok
}

func (l *loader) checkRef(t hcl.Traversal, sc *scope) bool {
	root := t.RootName()
	rng := t.SourceRange()
	if !slices.Contains(roots, root) {
		l.errorf(rng, "Unknown variable", "There is no variable named %q; a reference starts with var, local, model, scores, dataset, task, backend or (in a for_each pass) each.%s",
			root, didYouMean(root, roots, ""))
		return false
	}
	var name string
	if len(t) > 1 {
		switch a := t[1].(type) {
		case hcl.TraverseAttr:
			name = a.Name
		case hcl.TraverseIndex: // model["x"]
			if a.Key.Type() == cty.String && a.Key.IsKnown() && !a.Key.IsNull() {
				name = a.Key.AsString()
			}
		}
	}
	if name == "" {
		// A whole block namespace may be indexed by a computed name, as in
		// model[each.value]; evaluation then checks the key.
		if len(t) == 1 && sc.blocks && slices.Contains(namespaces, root) {
			return true
		}
		l.errorf(rng, "Invalid reference", "%q must be followed by a name, as in %s.<name>.", root, root)
		return false
	}
	ref := root + "." + name
	switch root {
	case "var":
		if l.varFailed[name] {
			return false
		}
		if _, ok := l.varVals[name]; !ok {
			l.errorf(rng, "Reference to undeclared variable", "No variable %q is declared.%s%s",
				name, available("Declared variables", keysOf(l.varDecls)), didYouMean(name, keysOf(l.varDecls), "var."))
			return false
		}
		return true
	case "each":
		if sc.each == cty.NilVal {
			l.errorf(rng, "Invalid reference", "%s is only available inside a pass block that sets for_each.", ref)
			return false
		}
		if name != "key" && name != "value" {
			l.errorf(rng, "Invalid reference", "each has key and value, not %q.%s", name, didYouMean(name, []string{"key", "value"}, "each."))
			return false
		}
		return true
	case "local":
		if l.localFailed[name] {
			return false
		}
		if _, ok := l.localDefs[name]; !ok {
			l.errorf(rng, "Reference to undeclared local value", "No local value %q is declared.%s%s",
				name, available("Declared locals", keysOf(l.localDefs)), didYouMean(name, keysOf(l.localDefs), "local."))
			return false
		}
		return true
	}
	if !sc.blocks {
		l.errorf(rng, "Invalid reference", "%s cannot be used in %s; only var. and local. values are available there.", ref, sc.where)
		return false
	}
	switch root {
	case "model", "scores":
		have := sc.models
		if root == "scores" {
			have = sc.scores
		}
		if have[name] {
			return true
		}
		if sc.poisoned[name] {
			return false
		}
		for j := sc.pass; j < len(l.passes); j++ {
			p := l.passes[j]
			if string(p.produces) != root || p.into != name {
				continue
			}
			if j == sc.pass {
				l.errorf(rng, "Slot not available yet", "%s is this pass's own output; it does not exist until the pass has run.", ref)
			} else {
				l.errorf(rng, "Slot not available yet", "%s is produced later, by pass %q at %s; a block can only use what earlier passes produce.", ref, p.name, at(p.decl))
			}
			return false
		}
		what := "No model block or earlier pass produces"
		if root == "scores" {
			what = "No earlier pass produces"
		}
		if sc.where == "an output block" {
			what = strings.Replace(what, "earlier ", "", 1)
		}
		names := keysOf(have)
		l.errorf(rng, "Reference to undefined "+root, "%s %s.%s%s", what, ref, available("Available", names), didYouMean(name, names, root+"."))
		return false
	default: // dataset, task, backend
		decl := l.declared[root]
		if decl[name] {
			return true
		}
		names := keysOf(decl)
		avail := available("Declared", names)
		if len(names) == 0 {
			avail = fmt.Sprintf(" The recipe has no %s blocks.", root)
		}
		l.errorf(rng, "Reference to undeclared "+root, "No %s block is named %q.%s%s", root, name, avail, didYouMean(name, names, root+"."))
		return false
	}
}

// available renders " <label>: a, b." for messages, or " There are none."
func available(label string, names []string) string {
	if len(names) == 0 {
		return " There are none."
	}
	return " " + label + ": " + strings.Join(names, ", ") + "."
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// evalContext builds the variables an expression in sc sees.
func (l *loader) evalContext(sc *scope) *hcl.EvalContext {
	vars := map[string]cty.Value{
		"var":   cty.ObjectVal(l.varVals),
		"local": cty.ObjectVal(l.localVals),
	}
	if sc.each != cty.NilVal {
		vars["each"] = sc.each
	}
	if sc.blocks {
		refs := func(kind string, names map[string]bool) cty.Value {
			m := make(map[string]cty.Value, len(names))
			for n, ok := range names {
				if ok {
					m[n] = refVal(kind, n)
				}
			}
			return cty.ObjectVal(m)
		}
		vars["model"] = refs("model", sc.models)
		vars["scores"] = refs("scores", sc.scores)
		for _, ns := range []string{"dataset", "task", "backend"} {
			vars[ns] = refs(ns, l.declared[ns])
		}
	}
	return &hcl.EvalContext{Variables: vars, Functions: l.funcs}
}

// eval checks an expression's references and evaluates it. ok is false when
// the value is unusable; the reason has been reported unless it is an
// earlier failure.
func (l *loader) eval(expr hcl.Expression, sc *scope) (cty.Value, bool) {
	if !l.checkRefs(expr, sc) {
		return cty.DynamicVal, false
	}
	v, diags := expr.Value(l.evalContext(sc))
	for _, d := range diags {
		l.explainIndex(d, sc)
	}
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return cty.DynamicVal, false
	}
	v, _ = v.UnmarkDeep()
	return v, true
}

// explainIndex rewrites HCL's "Invalid index" about a computed entry of a
// block namespace (model[each.value]) to name the entry and what exists.
func (l *loader) explainIndex(d *hcl.Diagnostic, sc *scope) {
	ix, ok := d.Expression.(*hclsyntax.IndexExpr)
	if !ok || d.Summary != "Invalid index" || d.EvalContext == nil {
		return
	}
	coll, ok := ix.Collection.(*hclsyntax.ScopeTraversalExpr)
	if !ok || len(coll.Traversal) != 1 {
		return
	}
	root := coll.Traversal.RootName()
	key, kd := ix.Key.Value(d.EvalContext)
	if kd.HasErrors() || !key.IsKnown() || key.IsNull() || key.Type() != cty.String {
		return
	}
	var names []string
	switch root {
	case "model":
		names = keysOf(sc.models)
	case "scores":
		names = keysOf(sc.scores)
	case "dataset", "task", "backend":
		names = keysOf(l.declared[root])
	default:
		return
	}
	d.Detail = fmt.Sprintf("%s[%q] does not exist at this point.%s%s", root, key.AsString(),
		available("Available", names), didYouMean(key.AsString(), names, root+"."))
}

// evalAs evaluates an attribute and converts it to a Go value.
func (l *loader) evalAs(attr *hcl.Attribute, sc *scope, ty cty.Type, out any) bool {
	v, ok := l.eval(attr.Expr, sc)
	if !ok {
		return false
	}
	if v.IsNull() {
		l.errorf(attr.Expr.Range(), fmt.Sprintf("Invalid value for %q", attr.Name), "The value must not be null.")
		return false
	}
	cv, err := convert.Convert(v, ty)
	if err == nil {
		err = gocty.FromCtyValue(cv, out)
	}
	if err != nil {
		l.errorf(attr.Expr.Range(), fmt.Sprintf("Invalid value for %q", attr.Name), "%s.", describeConvErr(err))
		return false
	}
	return true
}

func (l *loader) evalString(attr *hcl.Attribute, sc *scope) (string, bool) {
	var s string
	ok := l.evalAs(attr, sc, cty.String, &s)
	return s, ok
}

// describeConvErr turns cty's terse conversion errors ("string required")
// into a phrase that reads well after an attribute name.
func describeConvErr(err error) string { return describeConvMsg(err.Error()) }

func describeConvMsg(msg string) string {
	msg = strings.TrimSuffix(msg, ".")
	switch {
	case strings.HasPrefix(msg, "value must be a whole number"):
		// gocty adds the int64 bounds, which only obscure the point.
		return "a whole number is required"
	case strings.HasSuffix(msg, " required") && !strings.Contains(msg, " is required"):
		what := strings.TrimSuffix(msg, " required")
		if what != "" && strings.IndexByte("aeiou", what[0]) >= 0 {
			return "an " + what + " is required"
		}
		return "a " + what + " is required"
	}
	return msg
}

// refCheck checks that v is a reference into one of kinds (any namespace
// when kinds is empty) that exists in sc. References written as model.x
// were checked already; this also catches an object literal shaped like a
// reference. It returns a message describing the problem, or "".
func (l *loader) refCheck(v cty.Value, kinds []string, sc *scope) string {
	want := "a reference"
	if len(kinds) > 0 {
		want = "a reference to a " + strings.Join(kinds, " or ") + ", such as " + kinds[0] + ".<name>"
	}
	kind, name, ok := refParts(v)
	if !ok {
		if ns := namespaceOf(v); ns != "" {
			return fmt.Sprintf("The value must be %s; got the whole %s namespace. Pick one entry, as in %s.<name> or %s[each.value].", want, ns, ns, ns)
		}
		return fmt.Sprintf("The value must be %s; got %s.", want, friendly(v))
	}
	if len(kinds) > 0 && !slices.Contains(kinds, kind) {
		return fmt.Sprintf("The value must be %s; got %s.%s.", want, kind, name)
	}
	if !l.refAvailable(kind, name, sc) {
		return fmt.Sprintf("The value must be %s; %s.%s does not exist at this point.", want, kind, name)
	}
	return ""
}

// namespaceOf names the block namespace v is (an object of references of
// one kind, as `model` alone evaluates to), "" for anything else.
func namespaceOf(v cty.Value) string {
	if v.IsNull() || !v.IsWhollyKnown() || !v.Type().IsObjectType() || v.LengthInt() == 0 {
		return ""
	}
	ns := ""
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		kind, _, ok := refParts(e)
		if !ok || ns != "" && kind != ns {
			return ""
		}
		ns = kind
	}
	return ns
}

// refParts splits a reference value; ok is false for anything else.
func refParts(v cty.Value) (kind, name string, ok bool) {
	if v.IsNull() || !v.IsWhollyKnown() || !v.Type().Equals(refType) {
		return "", "", false
	}
	k, n := v.GetAttr("kind"), v.GetAttr("name")
	if k.IsNull() || n.IsNull() {
		return "", "", false
	}
	return k.AsString(), n.AsString(), true
}

// refAvailable says whether kind.name names something sc can see.
func (l *loader) refAvailable(kind, name string, sc *scope) bool {
	switch kind {
	case "model":
		return sc.models[name]
	case "scores":
		return sc.scores[name]
	case "dataset", "task", "backend":
		return l.declared[kind][name]
	}
	return false
}

// friendly names a value's type with an article, for messages.
func friendly(v cty.Value) string {
	if v.IsNull() {
		return "null"
	}
	n := v.Type().FriendlyName()
	switch n[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + n
	}
	return "a " + n
}

// errorf appends an error diagnostic at rng.
func (l *loader) errorf(rng hcl.Range, summary, format string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

// warnf appends a warning diagnostic at rng.
func (l *loader) warnf(rng hcl.Range, summary, format string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}
