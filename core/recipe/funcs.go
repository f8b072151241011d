package recipe

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// maxFileFuncSize caps what file() reads, so a recipe cannot make Load
// allocate without bound.
const maxFileFuncSize = 16 << 20

// functions returns the function table recipes see; paths resolve against dir.
func functions(dir string) map[string]function.Function {
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(dir, p)
	}
	str := func(name string) []function.Parameter {
		return []function.Parameter{{Name: name, Type: cty.String}}
	}
	fns := map[string]function.Function{
		// Numbers.
		"abs": stdlib.AbsoluteFunc, "ceil": stdlib.CeilFunc, "floor": stdlib.FloorFunc,
		"log": stdlib.LogFunc, "pow": stdlib.PowFunc, "signum": stdlib.SignumFunc,
		"parseint": stdlib.ParseIntFunc, "min": stdlib.MinFunc, "max": stdlib.MaxFunc,
		// Strings.
		"upper": stdlib.UpperFunc, "lower": stdlib.LowerFunc, "title": stdlib.TitleFunc,
		"format": stdlib.FormatFunc, "formatlist": stdlib.FormatListFunc,
		"join": stdlib.JoinFunc, "split": stdlib.SplitFunc, "substr": stdlib.SubstrFunc,
		"strlen": stdlib.StrlenFunc, "strrev": stdlib.ReverseFunc,
		"replace": stdlib.ReplaceFunc, "regex": stdlib.RegexFunc, "regexall": stdlib.RegexAllFunc,
		"regex_replace": stdlib.RegexReplaceFunc,
		"trimspace":     stdlib.TrimSpaceFunc, "trim": stdlib.TrimFunc,
		"trimprefix": stdlib.TrimPrefixFunc, "trimsuffix": stdlib.TrimSuffixFunc,
		"chomp": stdlib.ChompFunc, "indent": stdlib.IndentFunc,
		// Collections.
		"length": lengthFunc, "concat": stdlib.ConcatFunc, "range": stdlib.RangeFunc,
		"merge": stdlib.MergeFunc, "keys": stdlib.KeysFunc, "values": stdlib.ValuesFunc,
		"lookup": stdlib.LookupFunc, "contains": stdlib.ContainsFunc, "element": stdlib.ElementFunc,
		"coalesce": stdlib.CoalesceFunc, "coalescelist": stdlib.CoalesceListFunc,
		"compact": stdlib.CompactFunc, "distinct": stdlib.DistinctFunc, "flatten": stdlib.FlattenFunc,
		"chunklist": stdlib.ChunklistFunc, "reverse": stdlib.ReverseListFunc, "slice": stdlib.SliceFunc,
		"sort": stdlib.SortFunc, "zipmap": stdlib.ZipmapFunc, "setproduct": stdlib.SetProductFunc,
		"setunion": stdlib.SetUnionFunc, "setintersection": stdlib.SetIntersectionFunc,
		"setsubtract": stdlib.SetSubtractFunc,
		// Encoding and conversion.
		"jsonencode": stdlib.JSONEncodeFunc, "jsondecode": stdlib.JSONDecodeFunc,
		"csvdecode": stdlib.CSVDecodeFunc,
		"tostring":  stdlib.MakeToFunc(cty.String), "tonumber": stdlib.MakeToFunc(cty.Number),
		"tobool": stdlib.MakeToFunc(cty.Bool), "tolist": stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"toset": stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)), "tomap": stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"try": tryfunc.TryFunc, "can": tryfunc.CanFunc,

		// Files, paths and the environment.
		"file": function.New(&function.Spec{
			Description: "Reads a UTF-8 text file; relative paths resolve against the recipe directory.",
			Params:      str("path"),
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				s, err := readTextFile(resolve(args[0].AsString()), args[0].AsString())
				if err != nil {
					return cty.NilVal, err
				}
				return cty.StringVal(s), nil
			},
		}),
		"fileexists": function.New(&function.Spec{
			Description: "Whether a file (not a directory) exists; relative paths resolve against the recipe directory.",
			Params:      str("path"),
			Type:        function.StaticReturnType(cty.Bool),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				fi, err := os.Stat(resolve(args[0].AsString()))
				return cty.BoolVal(err == nil && !fi.IsDir()), nil
			},
		}),
		"abspath": function.New(&function.Spec{
			Description: "The absolute, cleaned form of a path relative to the recipe directory.",
			Params:      str("path"),
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal(resolve(args[0].AsString())), nil
			},
		}),
		"basename": function.New(&function.Spec{
			Params: str("path"),
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal(filepath.Base(args[0].AsString())), nil
			},
		}),
		"dirname": function.New(&function.Spec{
			Params: str("path"),
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal(filepath.Dir(args[0].AsString())), nil
			},
		}),
		"pathjoin": function.New(&function.Spec{
			Description: "Joins path elements with the OS separator and cleans the result.",
			VarParam:    &function.Parameter{Name: "elem", Type: cty.String},
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				parts := make([]string, len(args))
				for i, a := range args {
					parts[i] = a.AsString()
				}
				return cty.StringVal(filepath.Join(parts...)), nil
			},
		}),
		"env": function.New(&function.Spec{
			Description: "The value of an environment variable; when it is unset, the optional default, else \"\".",
			Params:      str("name"),
			VarParam:    &function.Parameter{Name: "default", Type: cty.String},
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				if len(args) > 2 {
					return cty.NilVal, fmt.Errorf("env takes a name and at most one default, got %d arguments", len(args))
				}
				name := args[0].AsString()
				v, ok := os.LookupEnv(name)
				if !ok && len(args) == 2 {
					return args[1], nil
				}
				if !utf8.ValidString(v) {
					return cty.NilVal, fmt.Errorf("environment variable %s is not valid UTF-8", name)
				}
				return cty.StringVal(v), nil
			},
		}),
	}
	// path is the short spelling of pathjoin.
	fns["path"] = fns["pathjoin"]
	return fns
}

// lengthFunc is stdlib's collection length extended to strings (counted in
// characters), as Terraform users expect.
var lengthFunc = function.New(&function.Spec{
	Description: "The number of elements of a collection or characters of a string.",
	Params: []function.Parameter{{
		Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true,
	}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		if ty == cty.String || ty == cty.DynamicPseudoType {
			return cty.Number, nil
		}
		if !ty.IsCollectionType() && !ty.IsTupleType() && !ty.IsObjectType() {
			return cty.NilType, fmt.Errorf("length of a %s is not defined; want a string, list, set, map, tuple or object", ty.FriendlyName())
		}
		return cty.Number, nil
	},
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		switch ty := args[0].Type(); {
		case ty == cty.String:
			return stdlib.Strlen(args[0])
		case ty.IsObjectType():
			return cty.NumberIntVal(int64(len(ty.AttributeTypes()))), nil
		}
		return stdlib.Length(args[0])
	},
})

// readTextFile reads a regular file of bounded size that must be UTF-8.
// Errors name the file as the recipe wrote it, not its resolved path, so
// messages do not depend on where the recipe lives.
func readTextFile(path, display string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("cannot read %s: %w", display, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", display, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", display)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileFuncSize+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", display, err)
	}
	if len(b) > maxFileFuncSize {
		return "", fmt.Errorf("%s is larger than %d bytes", display, maxFileFuncSize)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8 text", display)
	}
	return string(b), nil
}
