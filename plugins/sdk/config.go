package sdk

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
)

// attr is one attribute of a config struct.
type attr struct {
	name     string
	index    int
	ty       cty.Type // value type; the reference type for references
	required bool
	doc      string
	refKinds []string
	refList  bool
}

var (
	refGoType = reflect.TypeOf(Ref{})
	// refType is how the host encodes a reference.
	refType = cty.Object(map[string]cty.Type{"kind": cty.String, "name": cty.String})
)

var namespaces = []string{"model", "scores", "dataset", "task", "backend"}

func isNamespace(s string) bool {
	for _, n := range namespaces {
		if n == s {
			return true
		}
	}
	return false
}

// reserved attributes are the language's own on every pass block.
var reserved = map[string]bool{"name": true, "into": true, "backend": true}

// schemaOf derives a pass block schema from a config struct, following
// gohcl's tags: `hcl:"x"` is a required attribute, `hcl:"x,optional"` an
// optional one. A field of type Ref, *Ref or []Ref is a reference; its
// namespace comes from a `ref:"model,scores"` tag, else from the
// attribute's name (model, scores, dataset, task, backend, or their plural
// for a list). A `doc:"..."` tag documents the attribute.
func schemaOf(t reflect.Type) ([]attr, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("the config type %s is not a struct", t)
	}
	var out []attr
	seen := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("hcl")
		if !ok {
			continue
		}
		name, kind, _ := strings.Cut(tag, ",")
		switch kind {
		case "", "attr", "optional":
		default:
			return nil, fmt.Errorf("field %s: hcl tag %q: plugin pass configs hold attributes only (no blocks, labels or remain)", f.Name, tag)
		}
		if !f.IsExported() {
			return nil, fmt.Errorf("field %s: an hcl field must be exported", f.Name)
		}
		if !hclsyntax.ValidIdentifier(name) {
			return nil, fmt.Errorf("field %s: %q is not a valid attribute name", f.Name, name)
		}
		if reserved[name] {
			return nil, fmt.Errorf("field %s: attribute %q is reserved for every pass", f.Name, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("field %s: attribute %q declared twice", f.Name, name)
		}
		seen[name] = true
		a := attr{name: name, index: i, required: kind != "optional", doc: f.Tag.Get("doc")}
		ft := f.Type
		isPtr := ft.Kind() == reflect.Pointer
		if isPtr {
			ft = ft.Elem()
		}
		switch {
		case ft == refGoType:
			a.ty = refType
		case f.Type.Kind() == reflect.Slice && f.Type.Elem() == refGoType:
			a.ty, a.refList = cty.List(refType), true
		}
		if a.ty != cty.NilType {
			if rt := f.Tag.Get("ref"); rt != "" {
				for _, k := range strings.Split(rt, ",") {
					if !isNamespace(k) {
						return nil, fmt.Errorf("field %s: ref tag names unknown namespace %q", f.Name, k)
					}
					a.refKinds = append(a.refKinds, k)
				}
			} else if isNamespace(name) {
				a.refKinds = []string{name}
			} else if a.refList && isNamespace(strings.TrimSuffix(name, "s")) {
				a.refKinds = []string{strings.TrimSuffix(name, "s")}
			} else {
				a.refKinds = append([]string(nil), namespaces...)
			}
			out = append(out, a)
			continue
		}
		ty, err := gocty.ImpliedType(reflect.Zero(f.Type).Interface())
		if err != nil {
			return nil, fmt.Errorf("field %s (attribute %q): %v", f.Name, name, err)
		}
		a.ty = ty
		out = append(out, a)
	}
	return out, nil
}

// describeAttrs encodes a schema for the Describe call.
func describeAttrs(attrs []attr) ([]*pb.Attribute, error) {
	var out []*pb.Attribute
	for _, a := range attrs {
		pa := &pb.Attribute{Name: a.name, Required: a.required, Doc: a.doc}
		if len(a.refKinds) > 0 {
			pa.RefKinds, pa.RefList = a.refKinds, a.refList
		} else {
			b, err := ctyjson.MarshalType(a.ty)
			if err != nil {
				return nil, fmt.Errorf("attribute %q: %w", a.name, err)
			}
			pa.TypeJson = b
		}
		out = append(out, pa)
	}
	return out, nil
}

// decodeConfig fills the struct cfg points to from the host's JSON object
// of cty values. The host has already checked every value against the
// schema, so an error here means the two sides disagree about it.
func decodeConfig(attrs []attr, data []byte, cfg any) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("decoding the pass configuration: %w", err)
	}
	rv := reflect.ValueOf(cfg).Elem()
	for _, a := range attrs {
		r, ok := raw[a.name]
		if !ok {
			if a.required {
				return fmt.Errorf("the configuration lacks the required attribute %q", a.name)
			}
			continue
		}
		v, err := ctyjson.Unmarshal(r, a.ty)
		if err != nil {
			return fmt.Errorf("attribute %q: %w", a.name, err)
		}
		if err := gocty.FromCtyValue(v, rv.Field(a.index).Addr().Interface()); err != nil {
			return fmt.Errorf("attribute %q: %w", a.name, err)
		}
	}
	return nil
}
