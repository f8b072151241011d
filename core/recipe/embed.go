package recipe

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// A pass config may embed structs (anonymous fields without an hcl tag)
// whose attributes belong to the same block, as Go promotes their fields:
// that is how several kinds declare shared attributes once. gohcl decodes
// only a struct's own tagged fields, so such a config is decoded through a
// flat struct type built at registration, holding every tagged field,
// promoted ones included, at its top level. One gohcl.DecodeBody into it
// checks the whole body against one schema, so the diagnostics are gohcl's
// own: located, an unknown attribute reported once and matched against
// every attribute for "Did you mean". encoding/json flattens embedded
// structs too, so a config's JSON is the same as if it declared the fields
// itself.

// flatConfig maps a config type that embeds structs onto its flat form.
type flatConfig struct {
	typ   reflect.Type // the flat struct
	paths [][]int      // paths[i] is the index path of flat field i in the config type
}

// flatten returns nil for a config type that embeds no struct.
func flatten(t reflect.Type) (*flatConfig, error) {
	fc := &flatConfig{}
	var fields []reflect.StructField
	seen := map[string]string{} // HCL name and Go name → the field declaring it
	embeds := false
	var walk func(t reflect.Type, prefix []int) error
	walk = func(t reflect.Type, prefix []int) error {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			path := append(slices.Clone(prefix), i)
			tag, tagged := f.Tag.Lookup("hcl")
			if f.Anonymous && !tagged {
				if f.Type.Kind() != reflect.Struct || !f.IsExported() {
					return fmt.Errorf("embedded field %s: only an exported struct type (not a pointer) can be embedded", f.Name)
				}
				embeds = true
				if err := walk(f.Type, path); err != nil {
					return err
				}
				continue
			}
			if !tagged {
				continue
			}
			if !f.IsExported() {
				return fmt.Errorf("field %s: an unexported field cannot be decoded", f.Name)
			}
			name, _, _ := strings.Cut(tag, ",")
			for _, key := range []string{"attribute " + name, "Go name " + f.Name} {
				if prev, dup := seen[key]; dup {
					return fmt.Errorf("fields %s and %s have the same %s", prev, t.Name()+"."+f.Name, key)
				}
				seen[key] = t.Name() + "." + f.Name
			}
			fields = append(fields, reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag})
			fc.paths = append(fc.paths, path)
		}
		return nil
	}
	if err := walk(t, nil); err != nil || !embeds {
		return nil, err
	}
	fc.typ = reflect.StructOf(fields)
	return fc, nil
}

// decodeBody decodes a pass body into cfg, a pointer to the kind's config
// type.
func (e *kindEntry) decodeBody(body hcl.Body, ctx *hcl.EvalContext, cfg any) hcl.Diagnostics {
	if e.flat == nil {
		return gohcl.DecodeBody(body, ctx, cfg)
	}
	return e.flat.decode(body, ctx, cfg)
}

// decode decodes body into cfg (a pointer to the config type) through the
// flat type, keeping the values NewConfig preset for absent attributes as
// gohcl does.
func (fc *flatConfig) decode(body hcl.Body, ctx *hcl.EvalContext, cfg any) hcl.Diagnostics {
	dst := reflect.ValueOf(cfg).Elem()
	flat := reflect.New(fc.typ)
	for i, path := range fc.paths {
		flat.Elem().Field(i).Set(dst.FieldByIndex(path))
	}
	diags := gohcl.DecodeBody(body, ctx, flat.Interface())
	for i, path := range fc.paths {
		dst.FieldByIndex(path).Set(flat.Elem().Field(i))
	}
	return diags
}
