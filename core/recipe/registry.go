package recipe

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// SlotKind names a namespace that passes produce into.
type SlotKind string

// The namespaces a pass's `into` can produce into.
const (
	SlotModel  SlotKind = "model"
	SlotScores SlotKind = "scores"
)

// Ref is what `model.x`, `scores.x`, `dataset.x`, `task.x` and `backend.x`
// evaluate to. Pass configs declare fields of type Ref (required), *Ref
// (optional) or []Ref (a list); the attribute's name (or a `ref:"kind"`
// struct tag) says which namespace it must come from. A list's name may be
// the plural of a namespace: `tasks` holds task references.
type Ref struct {
	Kind string `cty:"kind"`
	Name string `cty:"name"`
}

// String renders the reference as written in a recipe, e.g. "model.teacher".
func (r Ref) String() string { return r.Kind + "." + r.Name }

// refType is the cty object type every reference evaluates to.
var refType = cty.Object(map[string]cty.Type{"kind": cty.String, "name": cty.String})

func refVal(kind, name string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"kind": cty.StringVal(kind), "name": cty.StringVal(name)})
}

// namespaces are the roots whose attributes are references.
var namespaces = []string{"model", "scores", "dataset", "task", "backend"}

func isNamespace(s string) bool {
	for _, n := range namespaces {
		if n == s {
			return true
		}
	}
	return false
}

// KindSpec is what a pass kind registers so the language can decode its block.
type KindSpec struct {
	Kind        string
	Description string
	// Produces is the namespace `into` names, or "" if the pass produces
	// nothing a later block can reference.
	Produces SlotKind
	// NewConfig returns a pointer to a fresh struct with `hcl:"..."` tags;
	// the block body (minus the common attributes name, into and backend) is
	// decoded into it with gohcl, so unknown or wrongly-typed attributes are
	// diagnosed. The tagged fields of an embedded struct (an anonymous field
	// without a tag) are attributes of the same block.
	NewConfig func() any
	// Schema, set instead of NewConfig, declares the block's attributes at
	// run time, for kinds whose configuration is not a Go type of this
	// program (pass plugins). The body is then decoded into a
	// *DynamicConfig.
	Schema *Schema
}

// commonPassAttrs are the attributes of every pass whose expressions the
// language evaluates apart from the kind's body (for_each is evaluated
// first, with the body's scope; see ReservedPassAttr for what a kind may
// not declare).
var commonPassAttrs = []string{"name", "into", "backend"}

// refField describes one Ref, *Ref or []Ref attribute of a pass config.
type refField struct {
	index int    // struct field index (in the flat type when the config embeds structs)
	attr  string // HCL attribute name
	kinds []string
	ptr   bool
	list  bool // []Ref: every element is checked
}

type kindEntry struct {
	spec   KindSpec
	typ    reflect.Type // the struct type NewConfig points to; nil for a Schema kind
	flat   *flatConfig  // set when typ embeds structs (see flatten)
	refs   []refField
	schema *hcl.BodySchema
}

// Registry maps pass kinds to their specs. There is no global registry:
// callers build one and pass it to Load.
type Registry struct {
	kinds map[string]*kindEntry
	// unavailable says why sources of pass kinds (plugins) could not be
	// loaded, so that an unknown kind's diagnostic can point at the
	// plugin that failed rather than only list the kinds that exist.
	unavailable []string
}

// NoteUnavailable records why a source of pass kinds (a plugin) could not
// be loaded; err should name the source. Load quotes it when a recipe uses
// a kind no one registered.
func (r *Registry) NoteUnavailable(err error) {
	if r == nil {
		return
	}
	r.unavailable = append(r.unavailable, err.Error())
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]*kindEntry{}} }

var (
	refGoType  = reflect.TypeOf(Ref{})
	exprType   = reflect.TypeOf((*hcl.Expression)(nil)).Elem()
	attrGoType = reflect.TypeOf(hcl.Attribute{})
)

// Register adds a pass kind. It rejects duplicates and config types gohcl
// could not decode into, so that Load never panics on a registered kind.
func (r *Registry) Register(s KindSpec) (err error) {
	if s.Kind == "" || !hclsyntax.ValidIdentifier(s.Kind) {
		return fmt.Errorf("recipe: pass kind %q is not a valid identifier", s.Kind)
	}
	if _, dup := r.kinds[s.Kind]; dup {
		return fmt.Errorf("recipe: pass kind %q registered twice", s.Kind)
	}
	switch s.Produces {
	case "", SlotModel, SlotScores:
	default:
		return fmt.Errorf("recipe: pass kind %q: unknown slot kind %q", s.Kind, s.Produces)
	}
	if s.Schema != nil {
		if s.NewConfig != nil {
			return fmt.Errorf("recipe: pass kind %q: set NewConfig or Schema, not both", s.Kind)
		}
		e, err := dynamicEntry(s)
		if err != nil {
			return fmt.Errorf("recipe: pass kind %q: %w", s.Kind, err)
		}
		r.kinds[s.Kind] = e
		return nil
	}
	if s.NewConfig == nil {
		return fmt.Errorf("recipe: pass kind %q: NewConfig is nil", s.Kind)
	}
	cfg := s.NewConfig()
	rv := reflect.ValueOf(cfg)
	if cfg == nil || rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("recipe: pass kind %q: NewConfig must return a non-nil pointer to a struct, got %T", s.Kind, cfg)
	}
	// gohcl panics on struct tags it cannot handle; surface that here as an
	// error instead of at Load time.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("recipe: pass kind %q: config type %T: %v", s.Kind, cfg, p)
		}
	}()
	e := &kindEntry{spec: s, typ: rv.Elem().Type()}
	if e.flat, err = flatten(e.typ); err != nil {
		return fmt.Errorf("recipe: pass kind %q: config type %T: %w", s.Kind, cfg, err)
	}
	// t is the type gohcl decodes into.
	t := e.typ
	if e.flat != nil {
		t = e.flat.typ
	}
	schema, partial := gohcl.ImpliedBodySchema(reflect.New(t).Interface())
	if partial {
		return fmt.Errorf("recipe: pass kind %q: config type %T must not have a \",remain\" field", s.Kind, cfg)
	}
	e.schema = schema
	attrs, err := ConfigAttrs(t)
	if err != nil {
		return fmt.Errorf("recipe: pass kind %q: config type %T: %w", s.Kind, cfg, err)
	}
	if err := validateConfigType(t, map[reflect.Type]bool{}); err != nil {
		return fmt.Errorf("recipe: pass kind %q: %w", s.Kind, err)
	}
	for _, a := range attrs {
		if a.IsRef {
			e.refs = append(e.refs, refField{index: a.Field, attr: a.Name, kinds: a.Ref, ptr: a.RefPtr, list: a.RefList})
		}
	}
	r.kinds[s.Kind] = e
	return nil
}

// validateConfigType checks, recursively through nested blocks, that every
// attribute field has a type gocty can decode into; gohcl would panic on the
// first recipe that set such an attribute. It also rejects embedded structs
// in nested blocks, whose fields gohcl would silently ignore.
func validateConfigType(t reflect.Type, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, kind, _ := strings.Cut(f.Tag.Get("hcl"), ",")
		if f.Tag.Get("hcl") == "" {
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				// Only a pass config's own embedded structs are flattened.
				return fmt.Errorf("embedded field %s of block type %s: a nested block's attributes cannot come from an embedded struct", f.Name, t)
			}
			continue
		}
		ft := f.Type
		switch kind {
		case "", "attr", "optional":
			if ft.AssignableTo(exprType) || ft == attrGoType || ft == reflect.PointerTo(attrGoType) {
				continue
			}
			if _, err := gocty.ImpliedType(reflect.New(ft).Interface()); err != nil {
				return fmt.Errorf("field %s (attribute %q): %v", f.Name, name, err)
			}
		case "block":
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.Struct {
				return fmt.Errorf("field %s (block %q): %s is not a struct", f.Name, name, ft)
			}
			if err := validateConfigType(ft, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// Lookup returns the spec registered for kind.
func (r *Registry) Lookup(kind string) (KindSpec, bool) {
	if r == nil {
		return KindSpec{}, false
	}
	e, ok := r.kinds[kind]
	if !ok {
		return KindSpec{}, false
	}
	return e.spec, true
}

// Kinds returns the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (r *Registry) entry(kind string) *kindEntry {
	if r == nil {
		return nil
	}
	return r.kinds[kind]
}

// newConfig calls NewConfig and checks it still returns the registered type.
func (e *kindEntry) newConfig() (any, error) {
	cfg := e.spec.NewConfig()
	rv := reflect.ValueOf(cfg)
	if cfg == nil || rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Type() != e.typ {
		return nil, errors.New("NewConfig returned " + fmt.Sprintf("%T", cfg) + ", not *" + e.typ.String() + " as at registration")
	}
	return cfg, nil
}

// unavailableNote is the sentence an unknown kind's diagnostic adds about
// the sources that could not be loaded ("" when all were).
func (r *Registry) unavailableNote() string {
	if r == nil || len(r.unavailable) == 0 {
		return ""
	}
	return " It may belong to a plugin that could not be loaded: " + strings.Join(r.unavailable, "; ")
}
