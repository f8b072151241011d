package recipe

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// ConfigAttr is one attribute of a pass config struct, as ConfigAttrs
// derives it. Both the language (for built-in kinds) and the plugin SDK
// (for the schemas plugins describe) derive schemas with it, so the two
// agree on tags, references and reserved names.
type ConfigAttr struct {
	Name     string
	Field    int // index of the struct field
	Required bool
	Doc      string // the field's `doc:"..."` tag
	// Type is the value's type: RefType for a reference (RefList: a list
	// of them), cty.NilType for an hcl.Expression or hcl.Attribute field.
	Type cty.Type
	// IsRef marks a Ref, *Ref or []Ref field; Ref lists the namespaces it
	// may name (empty: any), RefList a []Ref, RefPtr a *Ref.
	IsRef, RefList, RefPtr bool
	Ref                    []string
}

// RefType is the cty object type every reference evaluates to.
var RefType = refType

// ReservedPassAttr reports whether name is one of the attributes the
// language decodes itself on every pass block (name, into, backend,
// for_each): a kind that declared one would never see its value.
func ReservedPassAttr(name string) bool {
	for _, a := range commonPassSchema.Attributes {
		if a.Name == name {
			return true
		}
	}
	return false
}

// ConfigAttrs derives the attributes of a pass config struct from gohcl's
// tags: `hcl:"x"` (or `hcl:"x,attr"`) is a required attribute,
// `hcl:"x,optional"` an optional one; other fields (blocks, labels,
// untagged) are skipped. A field of type Ref, *Ref or []Ref is a
// reference; its namespaces come from a `ref:"model,scores"` tag, else
// from the attribute's name (model, scores, dataset, task, backend, or
// their plural for a list), else any. It is an error for an attribute to
// take a reserved name (ReservedPassAttr), be declared twice, not be an
// identifier, or have a type cty cannot hold; errors name the field.
func ConfigAttrs(t reflect.Type) ([]ConfigAttr, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("the config type %s is not a struct", t)
	}
	var out []ConfigAttr
	seen := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("hcl")
		if !ok {
			continue
		}
		name, kind, _ := strings.Cut(tag, ",")
		if kind != "" && kind != "attr" && kind != "optional" {
			continue
		}
		if !hclsyntax.ValidIdentifier(name) {
			return nil, fmt.Errorf("field %s: %q is not a valid attribute name", f.Name, name)
		}
		if ReservedPassAttr(name) {
			return nil, fmt.Errorf("field %s: attribute %q is reserved for every pass (the language sets it); rename the attribute", f.Name, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("field %s: attribute %q declared twice", f.Name, name)
		}
		seen[name] = true
		a := ConfigAttr{Name: name, Field: i, Required: kind != "optional", Doc: f.Tag.Get("doc")}
		ft := f.Type
		switch ft.Kind() {
		case reflect.Pointer:
			a.RefPtr = ft.Elem() == refGoType
			ft = ft.Elem()
		case reflect.Slice:
			a.RefList = ft.Elem() == refGoType
			ft = ft.Elem()
		}
		a.IsRef = ft == refGoType
		if !a.IsRef {
			a.RefPtr, a.RefList = false, false
			switch {
			case f.Type.AssignableTo(exprType) || f.Type == attrGoType || f.Type == reflect.PointerTo(attrGoType):
				a.Type = cty.NilType
			default:
				ty, err := gocty.ImpliedType(reflect.New(f.Type).Interface())
				if err != nil {
					return nil, fmt.Errorf("field %s (attribute %q): %v", f.Name, name, err)
				}
				a.Type = ty
			}
			out = append(out, a)
			continue
		}
		a.Type = refType
		if a.RefList {
			a.Type = cty.List(refType)
		}
		if rt := f.Tag.Get("ref"); rt != "" {
			for _, k := range strings.Split(rt, ",") {
				if !isNamespace(k) {
					return nil, fmt.Errorf("field %s: ref tag names unknown namespace %q", f.Name, k)
				}
				a.Ref = append(a.Ref, k)
			}
		} else if isNamespace(name) {
			a.Ref = []string{name}
		} else if a.RefList && isNamespace(strings.TrimSuffix(name, "s")) {
			// tasks = [task.a, task.b]
			a.Ref = []string{strings.TrimSuffix(name, "s")}
		}
		out = append(out, a)
	}
	return out, nil
}
