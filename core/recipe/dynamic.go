package recipe

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// Schema is a pass kind's block schema given as data rather than as a Go
// struct: pass plugins describe their attributes over RPC when whittle
// starts. Only attributes are supported, no nested blocks.
type Schema struct {
	Attributes []AttrSpec
	// Implementation identifies the code behind the kind (a plugin's
	// version and binary digest). It is recorded in every DynamicConfig,
	// whose JSON keys the pipeline's resume decisions, so a rebuilt plugin
	// runs its passes again instead of reusing stale results.
	Implementation string
}

// AttrSpec is one attribute of a Schema.
type AttrSpec struct {
	Name string
	// Type is the value's type; values are converted to it.
	// cty.DynamicPseudoType accepts any value. Unused for references.
	Type     cty.Type
	Required bool
	Doc      string
	// Ref, when non-empty, makes the attribute a reference into one of
	// these namespaces ("model", "scores", "dataset", "task", "backend");
	// with RefList, a list of such references.
	Ref     []string
	RefList bool
}

// DynamicConfig is the decoded body of a Schema kind.
type DynamicConfig struct {
	// Values holds every attribute the block sets (null optional ones are
	// left out), converted to its declared type. A reference is an object
	// {kind, name}; a list of references a list of them.
	Values map[string]cty.Value
	// Refs lists every reference among Values, by attribute name then
	// position, so that the pipeline keys the pass on their content.
	Refs []Ref
	// Implementation is copied from the Schema.
	Implementation string
}

// MarshalJSON encodes the values as one JSON object keyed by attribute name
// (sorted, so equal configs encode equally), with the implementation under
// "@implementation".
func (c *DynamicConfig) MarshalJSON() ([]byte, error) {
	out := make(map[string]json.RawMessage, len(c.Values)+1)
	for name, v := range c.Values {
		b, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", name, err)
		}
		out[name] = b
	}
	if c.Implementation != "" {
		b, _ := json.Marshal(c.Implementation)
		out["@implementation"] = b
	}
	return json.Marshal(out)
}

// dynamicEntry checks a Schema and builds what the loader decodes with.
func dynamicEntry(s KindSpec) (*kindEntry, error) {
	e := &kindEntry{spec: s, schema: &hcl.BodySchema{}}
	seen := map[string]bool{}
	for _, a := range s.Schema.Attributes {
		if !hclsyntax.ValidIdentifier(a.Name) {
			return nil, fmt.Errorf("attribute name %q is not a valid identifier", a.Name)
		}
		if ReservedPassAttr(a.Name) {
			return nil, fmt.Errorf("attribute %q is reserved for every pass (the language sets it)", a.Name)
		}
		if seen[a.Name] {
			return nil, fmt.Errorf("attribute %q declared twice", a.Name)
		}
		seen[a.Name] = true
		if len(a.Ref) > 0 {
			for _, k := range a.Ref {
				if !isNamespace(k) {
					return nil, fmt.Errorf("attribute %q refers to unknown namespace %q", a.Name, k)
				}
			}
			e.refs = append(e.refs, refField{index: -1, attr: a.Name, kinds: slices.Clone(a.Ref), ptr: !a.Required, list: a.RefList})
		} else if a.Type == cty.NilType {
			return nil, fmt.Errorf("attribute %q has no type", a.Name)
		}
		e.schema.Attributes = append(e.schema.Attributes, hcl.AttributeSchema{Name: a.Name, Required: a.Required})
	}
	return e, nil
}

// decodeDynamic decodes a Schema kind's body. Every problem is reported at
// the attribute (or block) it concerns, like gohcl's for struct kinds.
func (l *loader) decodeDynamic(p *passInfo, sc *scope) *DynamicConfig {
	spec := p.entry.spec.Schema
	cfg := &DynamicConfig{Values: map[string]cty.Value{}, Implementation: spec.Implementation}
	bad := l.checkBodyRefs(p, sc)
	content, diags := p.remain.Content(p.entry.schema)
	for _, d := range diags {
		if d.Subject == nil || !overlapsAny(*d.Subject, bad) {
			l.diags = append(l.diags, d)
		}
	}
	attrs := slices.Clone(spec.Attributes)
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Name < attrs[j].Name })
	for _, as := range attrs {
		a := content.Attributes[as.Name]
		if a == nil || overlapsAny(a.Expr.Range(), bad) {
			continue
		}
		v, ok := l.eval(a.Expr, sc)
		if !ok {
			continue
		}
		if v.IsNull() {
			if as.Required {
				l.errorf(a.Expr.Range(), fmt.Sprintf("Invalid value for %q", a.Name), "The attribute is required; the value must not be null.")
			}
			continue
		}
		if len(as.Ref) > 0 {
			// checkBodyRefs has checked the value's shape and availability.
			if !as.RefList {
				kind, name, _ := refParts(v)
				cfg.Refs = append(cfg.Refs, Ref{Kind: kind, Name: name})
				cfg.Values[a.Name] = refVal(kind, name)
				continue
			}
			var elems []cty.Value
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				kind, name, _ := refParts(e)
				cfg.Refs = append(cfg.Refs, Ref{Kind: kind, Name: name})
				elems = append(elems, refVal(kind, name))
			}
			if len(elems) == 0 {
				cfg.Values[a.Name] = cty.ListValEmpty(refType)
			} else {
				cfg.Values[a.Name] = cty.ListVal(elems)
			}
			continue
		}
		cv, err := convert.Convert(v, as.Type)
		if err != nil {
			l.errorf(a.Expr.Range(), fmt.Sprintf("Invalid value for %q", a.Name), "%s.", describeConvErr(err))
			continue
		}
		cfg.Values[a.Name] = cv
	}
	return cfg
}
