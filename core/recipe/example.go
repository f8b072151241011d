package recipe

import (
	"fmt"
	"sort"
	"strings"

	"github.com/zclconf/go-cty/cty"
)

// exampleValue writes a value of type ty in HCL syntax, for messages that
// show how to spell one on the command line. i varies the sample so that a
// list's elements differ.
func exampleValue(ty cty.Type, i int) string {
	switch {
	case ty == cty.String:
		return fmt.Sprintf("%q", string(rune('a'+i%26)))
	case ty == cty.Number:
		return fmt.Sprint(i + 1)
	case ty == cty.Bool:
		return "true"
	case ty.IsListType() || ty.IsSetType():
		return "[" + exampleValue(ty.ElementType(), 0) + ", " + exampleValue(ty.ElementType(), 1) + "]"
	case ty.IsMapType():
		return "{ key = " + exampleValue(ty.ElementType(), 0) + " }"
	case ty.IsTupleType():
		parts := make([]string, len(ty.TupleElementTypes()))
		for j, et := range ty.TupleElementTypes() {
			parts[j] = exampleValue(et, j)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case ty.IsObjectType():
		names := make([]string, 0, len(ty.AttributeTypes()))
		for n := range ty.AttributeTypes() {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for j, n := range names {
			parts[j] = n + " = " + exampleValue(ty.AttributeType(n), j)
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	}
	return `"a"`
}

// overrideHint shows how to set variable name of type ty on the command
// line: complex values are HCL expressions, quoted for the shell.
func overrideHint(name string, ty cty.Type) string {
	if ty.IsPrimitiveType() {
		return fmt.Sprintf("for example -var %s=%s", name, strings.Trim(exampleValue(ty, 0), `"`))
	}
	return fmt.Sprintf("give an HCL value, quoted for the shell, for example -var '%s=%s'", name, exampleValue(ty, 0))
}
