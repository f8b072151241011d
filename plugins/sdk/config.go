package sdk

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/recipe"
)

// namespaces are what a reference may name when its field says nothing.
var namespaces = []string{"model", "scores", "dataset", "task", "backend"}

// refType is how the host encodes a reference.
var refType = recipe.RefType

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

// schemaOf derives a pass block schema from a config struct with the
// language's own derivation (recipe.ConfigAttrs: gohcl's tags, Ref fields,
// reserved names), and checks what a plugin can carry over the wire:
// exported attributes of types cty can hold, no blocks, labels or remain,
// no hcl.Expression. A reference that names no namespace may name any.
func schemaOf(t reflect.Type) ([]attr, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("the config type %s is not a struct", t)
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("hcl")
		if !ok {
			continue
		}
		switch _, kind, _ := strings.Cut(tag, ","); kind {
		case "", "attr", "optional":
		default:
			return nil, fmt.Errorf("field %s: hcl tag %q: plugin pass configs hold attributes only (no blocks, labels or remain)", f.Name, tag)
		}
		if !f.IsExported() {
			return nil, fmt.Errorf("field %s: an hcl field must be exported", f.Name)
		}
	}
	cas, err := recipe.ConfigAttrs(t)
	if err != nil {
		return nil, err
	}
	out := make([]attr, 0, len(cas))
	for _, ca := range cas {
		a := attr{name: ca.Name, index: ca.Field, ty: ca.Type, required: ca.Required, doc: ca.Doc, refList: ca.RefList}
		if ca.IsRef {
			a.refKinds = ca.Ref
			if len(a.refKinds) == 0 {
				a.refKinds = append([]string(nil), namespaces...)
			}
		} else if ca.Type == cty.NilType {
			return nil, fmt.Errorf("field %s (attribute %q): a plugin cannot take an unevaluated expression; use a concrete type", t.Field(ca.Field).Name, ca.Name)
		}
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
