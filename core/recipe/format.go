package recipe

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format returns src in canonical HCL layout (hclwrite.Format). A recipe
// with syntax errors is not formatted: the error is a *DiagnosticsError
// whose positions name the file "<input>".
func Format(src []byte) ([]byte, error) { return FormatFile("<input>", src) }

// FormatFile is Format with the file name diagnostics should use.
func FormatFile(filename string, src []byte) ([]byte, error) {
	// hclwrite formats token streams without parsing them, so it would
	// happily "format" a broken file; parse first to refuse that.
	if _, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos); diags.HasErrors() {
		sortDiagnostics(diags)
		return nil, &DiagnosticsError{Diags: diags}
	}
	return hclwrite.Format(src), nil
}
