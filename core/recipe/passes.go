package recipe

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

var commonPassSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "name"}, {Name: "into"}, {Name: "backend"}, {Name: "for_each"},
}}

// scanPasses is the first sweep over pass blocks: kinds, names and the slots
// they produce, so that a reference to a slot made later can say by whom.
func (l *loader) scanPasses(blocks []*hcl.Block) {
	count := map[string]int{}
	for _, b := range blocks {
		if len(b.Labels) == 1 {
			count[b.Labels[0]]++
		}
	}
	seq := map[string]int{}
	names := map[string]*passInfo{}
	// produced remembers which model-block names a pass already replaced,
	// so shadowing is reported once.
	produced := map[string]bool{}
	for _, b := range blocks {
		if len(b.Labels) != 1 {
			continue
		}
		kind := b.Labels[0]
		entry := l.reg.entry(kind)
		if entry == nil {
			kinds := l.reg.Kinds()
			failed := l.reg.unavailableNote()
			if len(kinds) == 0 {
				l.errorf(b.LabelRanges[0], "Unknown pass kind", "No pass kind %q is registered; no pass kinds are registered at all.%s", kind, failed)
			} else {
				l.errorf(b.LabelRanges[0], "Unknown pass kind", "No pass kind %q is registered.%s Registered kinds: %s.%s", kind, didYouMean(kind, kinds, ""), strings.Join(kinds, ", "), failed)
			}
		}
		common, remain, _ := b.Body.PartialContent(commonPassSchema) // no required attributes: no diagnostics
		seq[kind]++
		base := kind
		if count[kind] > 1 {
			base = fmt.Sprintf("%s-%d", kind, seq[kind])
		}
		instances := []cty.Value{cty.NilVal}
		if a := common.Attributes["for_each"]; a != nil {
			instances = l.forEach(a)
		}
		for _, each := range instances {
			p := &passInfo{block: b, decl: b.DefRange, nameRng: b.LabelRanges[0], entry: entry, common: common, remain: remain, each: each}
			if entry != nil {
				p.produces = entry.spec.Produces
			}
			sc := declScope("a pass's name or into")
			sc.each = each
			p.name = base
			if each != cty.NilVal {
				p.name = base + "." + each.GetAttr("key").AsString()
			}
			l.scanPass(p, sc, names, produced)
		}
	}
}

// scanPass evaluates one pass's name and into and records it.
func (l *loader) scanPass(p *passInfo, sc *scope, names map[string]*passInfo, produced map[string]bool) {
	b, kind := p.block, p.block.Labels[0]
	if a := p.common.Attributes["name"]; a != nil {
		p.nameRng = a.Expr.Range()
		if s, ok := l.evalString(a, sc); ok {
			if !validPassName(s) {
				l.errorf(a.Expr.Range(), `Invalid value for "name"`, "%q is not a valid pass name; use letters, digits, '_', '-' and '.', starting with a letter, digit or '_'.", s)
			} else {
				p.name = s
			}
		}
	} else if p.each != cty.NilVal && !validPassName(p.name) {
		l.errorf(p.common.Attributes["for_each"].Expr.Range(), "Invalid pass name", "The for_each key makes the default pass name %q, which is not a valid pass name; set name = \"...\" (e.g. from each.key).", p.name)
	}
	if first, dup := names[p.name]; dup {
		detail := fmt.Sprintf("Pass name %q is already used by the pass at %s; set a distinct name = \"...\".", p.name, at(first.decl))
		if p.each != cty.NilVal {
			detail = fmt.Sprintf("Pass name %q is already used by the pass at %s; in a for_each block, make the name depend on each.key.", p.name, at(first.decl))
		}
		l.errorf(p.nameRng, "Duplicate pass name", "%s", detail)
	} else {
		names[p.name] = p
	}

	if a := p.common.Attributes["into"]; a != nil {
		if p.entry != nil && p.produces == "" {
			l.errorf(a.NameRange, `Unexpected "into"`, "Pass kind %q produces nothing a later block can refer to; remove into.", kind)
		} else if s, ok := l.evalString(a, sc); ok {
			if !hclsyntax.ValidIdentifier(s) {
				l.errorf(a.Expr.Range(), `Invalid value for "into"`, "%q is not a valid slot name; a name starts with a letter or underscore and has only letters, digits, underscores and dashes.", s)
			} else {
				p.into = s
			}
		}
	} else if p.produces != "" {
		l.errorf(b.DefRange, `Missing "into"`, "Pass kind %q produces a %s; name it with into = \"<name>\".", kind, p.produces)
	}
	if p.produces == SlotModel && p.into != "" && !produced[p.into] {
		if decl, ok := l.models[p.into]; ok {
			l.warnf(p.common.Attributes["into"].Expr.Range(), "Model block replaced",
				"into = %q replaces the model declared at %s: later passes and outputs that refer to model.%s get this pass's result.", p.into, at(decl), p.into)
		}
		produced[p.into] = true
	}
	p.pass = &Pass{Kind: kind, Name: p.name, Index: len(l.passes), Into: p.into, DeclRange: b.DefRange, Body: p.remain}
	if p.each != cty.NilVal {
		p.pass.EachKey = p.each.GetAttr("key").AsString()
	}
	if a := p.common.Attributes["into"]; a != nil {
		p.pass.IntoRange = a.Expr.Range()
	}
	l.passes = append(l.passes, p)
	l.r.Passes = append(l.r.Passes, p.pass)
}

// forEach evaluates a pass block's for_each: a map or object makes one
// instance per key, in key order, each.value its value; a list, tuple or
// set of strings one per string, in order, each.key = each.value = the
// string. It sees var. and local. only: the passes a recipe declares must
// be known before anything runs.
func (l *loader) forEach(a *hcl.Attribute) []cty.Value {
	v, ok := l.eval(a.Expr, declScope("for_each"))
	if !ok {
		return nil
	}
	instance := func(key string, value cty.Value) cty.Value {
		return cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(key), "value": value})
	}
	if v.IsNull() {
		l.errorf(a.Expr.Range(), `Invalid value for "for_each"`, "for_each is null; give a map, an object, or a list of strings.")
		return nil
	}
	var out []cty.Value
	ty := v.Type()
	switch {
	case ty.IsMapType() || ty.IsObjectType():
		keys := make([]string, 0, v.LengthInt())
		vals := v.AsValueMap()
		for k := range vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, instance(k, vals[k]))
		}
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		seen := map[string]bool{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() || e.Type() != cty.String {
				l.errorf(a.Expr.Range(), `Invalid value for "for_each"`, "A for_each list must hold strings (the keys); it holds %s. Use a map to attach values to keys.", friendly(e))
				return nil
			}
			k := e.AsString()
			if seen[k] {
				l.errorf(a.Expr.Range(), `Invalid value for "for_each"`, "The key %q appears twice in for_each.", k)
				return nil
			}
			seen[k] = true
			out = append(out, instance(k, e))
		}
	default:
		l.errorf(a.Expr.Range(), `Invalid value for "for_each"`, "for_each must be a map, an object, or a list of strings, not %s.", ty.FriendlyName())
		return nil
	}
	return out
}

// validPassName accepts names safe as a directory name in the run directory.
func validPassName(s string) bool {
	if s == "" || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// passScope is what pass i sees: model blocks and what passes before it
// produce.
func (l *loader) passScope(i int) *scope {
	sc := &scope{where: "a pass block", blocks: true, pass: i, each: cty.NilVal,
		models: map[string]bool{}, scores: map[string]bool{}, poisoned: map[string]bool{}}
	if i < len(l.passes) {
		sc.each = l.passes[i].each
	}
	for name := range l.models {
		sc.models[name] = true
	}
	for _, p := range l.passes[:i] {
		switch {
		case p.into == "":
		case p.entry == nil:
			sc.poisoned[p.into] = true
		case p.produces == SlotModel:
			sc.models[p.into] = true
		case p.produces == SlotScores:
			sc.scores[p.into] = true
		}
	}
	return sc
}

func (l *loader) decodePasses() {
	for i, p := range l.passes {
		sc := l.passScope(i)
		if a := p.common.Attributes["backend"]; a != nil {
			if v, ok := l.eval(a.Expr, sc); ok {
				if msg := l.refCheck(v, []string{"backend"}, sc); msg != "" {
					l.errorf(a.Expr.Range(), "Invalid reference", "%s", msg)
				} else {
					_, name, _ := refParts(v)
					p.pass.Backend = &Ref{Kind: "backend", Name: name}
				}
			}
		}
		if p.entry == nil {
			continue
		}
		if p.entry.spec.Schema != nil {
			p.pass.Config = l.decodeDynamic(p, sc)
			continue
		}
		cfg, err := p.entry.newConfig()
		if err != nil {
			l.errorf(p.decl, "Invalid pass kind", "Pass kind %q: %v.", p.entry.spec.Kind, err)
			continue
		}
		l.diags = append(l.diags, l.decodeConfig(p, sc, cfg)...)
		p.pass.Config = cfg
	}
}

// decodeConfig decodes a pass body into its kind's config. References are
// checked first, with the language's own messages; HCL's and gohcl's
// diagnostics about the same expressions are then dropped, so that each
// problem is reported once.
func (l *loader) decodeConfig(p *passInfo, sc *scope, cfg any) (diags hcl.Diagnostics) {
	sb, _ := p.block.Body.(*hclsyntax.Body)
	bad := l.checkBodyRefs(p, sc)
	defer func() {
		// Registration rejects the config types gohcl cannot handle; this is
		// the backstop that keeps a malformed recipe from crashing Load.
		if r := recover(); r != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot decode pass",
				Detail:   fmt.Sprintf("Pass kind %q: %v.", p.entry.spec.Kind, r),
				Subject:  p.decl.Ptr(),
			})
		}
	}()
	decoded := p.entry.decodeBody(p.remain, l.evalContext(sc), cfg)
	if !decoded.HasErrors() && len(bad) == 0 {
		// References anywhere in the config, lists and nested blocks
		// included, must name something that exists at this pass.
		for _, ref := range collectRefs(cfg) {
			if ref != (Ref{}) && !l.refAvailable(ref.Kind, ref.Name, sc) {
				l.errorf(p.decl, "Invalid reference", "The configuration of pass %q holds %s, which does not exist at this point; write references as <kind>.<name>.", p.name, ref)
			}
		}
	}
	for _, d := range decoded {
		if d.Subject != nil && overlapsAny(*d.Subject, bad) {
			continue
		}
		if d.Summary == "Unsuitable value type" && d.Subject != nil && sb != nil {
			if a := attrAt(sb, *d.Subject); a != nil {
				d.Summary = fmt.Sprintf("Invalid value for %q", a.Name)
				d.Detail = describeConvMsg(strings.TrimPrefix(d.Detail, "Unsuitable value: ")) + "."
				d.Subject = a.Expr.Range().Ptr()
			}
		}
		diags = append(diags, d)
	}
	return diags
}

// checkBodyRefs checks every reference in a pass body, and the values of
// its reference attributes, reporting problems with the language's own
// messages. It returns the ranges of the expressions found bad, whose
// decoder diagnostics are then dropped.
func (l *loader) checkBodyRefs(p *passInfo, sc *scope) []hcl.Range {
	sb, _ := p.block.Body.(*hclsyntax.Body)
	if sb == nil {
		return nil
	}
	var bad []hcl.Range
	walkAttrs(sb, true, func(a *hclsyntax.Attribute) {
		if !l.checkRefs(a.Expr, sc) {
			bad = append(bad, a.Expr.Range())
		}
	})
	for _, rf := range p.entry.refs {
		a := sb.Attributes[rf.attr]
		if a == nil || overlapsAny(a.Expr.Range(), bad) {
			continue
		}
		v, ok := l.eval(a.Expr, sc)
		if ok && !(v.IsNull() && (rf.ptr || rf.list)) {
			if msg := l.refFieldCheck(v, rf, sc); msg != "" {
				l.errorf(a.Expr.Range(), "Invalid reference", "%s", msg)
				ok = false
			}
		}
		if !ok {
			bad = append(bad, a.Expr.Range())
		}
	}
	return bad
}

// refFieldCheck checks a Ref, *Ref or []Ref attribute's value.
func (l *loader) refFieldCheck(v cty.Value, rf refField, sc *scope) string {
	if !rf.list {
		return l.refCheck(v, rf.kinds, sc)
	}
	ty := v.Type()
	if !ty.IsListType() && !ty.IsTupleType() && !ty.IsSetType() {
		return fmt.Sprintf("The value must be a list of references, such as [%s.a, %s.b]; got %s.", kindOr(rf.kinds), kindOr(rf.kinds), friendly(v))
	}
	for it, i := v.ElementIterator(), 0; it.Next(); i++ {
		_, e := it.Element()
		if msg := l.refCheck(e, rf.kinds, sc); msg != "" {
			return fmt.Sprintf("Element %d: %s", i, msg)
		}
	}
	return ""
}

func kindOr(kinds []string) string {
	if len(kinds) == 0 {
		return "model"
	}
	return kinds[0]
}

// walkAttrs calls f for every attribute of b and its nested blocks, except
// the common pass attributes at the top level.
func walkAttrs(b *hclsyntax.Body, top bool, f func(*hclsyntax.Attribute)) {
	for _, a := range sortedSyntaxAttrs(b) {
		if top && isCommonPassAttr(a.Name) {
			continue
		}
		f(a)
	}
	for _, blk := range b.Blocks {
		walkAttrs(blk.Body, false, f)
	}
}

func sortedSyntaxAttrs(b *hclsyntax.Body) []*hclsyntax.Attribute {
	out := make([]*hclsyntax.Attribute, 0, len(b.Attributes))
	for _, a := range b.Attributes {
		out = append(out, a)
	}
	// Source order keeps diagnostics deterministic before sorting.
	sort.Slice(out, func(i, j int) bool { return out[i].SrcRange.Start.Byte < out[j].SrcRange.Start.Byte })
	return out
}

func isCommonPassAttr(name string) bool {
	for _, c := range commonPassAttrs {
		if c == name {
			return true
		}
	}
	return false
}

// attrAt finds the attribute, at any depth, whose value contains rng.
func attrAt(b *hclsyntax.Body, rng hcl.Range) *hclsyntax.Attribute {
	var found *hclsyntax.Attribute
	walkAttrs(b, true, func(a *hclsyntax.Attribute) {
		if found == nil && contains(a.Expr.Range(), rng) {
			found = a
		}
	})
	return found
}

func contains(outer, inner hcl.Range) bool {
	return outer.Filename == inner.Filename && outer.Start.Byte <= inner.Start.Byte && inner.End.Byte <= outer.End.Byte
}

func overlapsAny(r hcl.Range, rs []hcl.Range) bool {
	for _, o := range rs {
		if r.Overlaps(o) || contains(o, r) {
			return true
		}
	}
	return false
}

// collectRefs finds every Ref in a decoded config, through pointers,
// nested structs, slices and maps.
func collectRefs(v any) []Ref {
	var out []Ref
	var walk func(reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			// Interfaces (hcl.Expression, hcl.Body fields) are not
			// followed: they hold syntax, not decoded values.
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			if v.Type() == refGoType {
				out = append(out, v.Interface().(Ref))
				return
			}
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k))
			}
		}
	}
	walk(reflect.ValueOf(v))
	return out
}
