package recipe

import (
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
)

// CheckFiles reports every model, tokenizer, dataset and task path of a
// loaded recipe that does not exist, at the path attribute. It is separate
// from Load so that formatting, planning tests and editors need no files.
func CheckFiles(r *Recipe) hcl.Diagnostics {
	var diags hcl.Diagnostics
	check := func(what, name, path string, rng hcl.Range) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			d := &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Missing file",
				Detail:   fmt.Sprintf("%s %q: %v.", what, name, err),
			}
			if rng.Filename != "" {
				d.Subject = rng.Ptr()
			}
			diags = append(diags, d)
		}
	}
	for _, m := range r.Models {
		check("Model", m.Name, m.Path, m.PathRange)
		check("Tokenizer of model", m.Name, m.Tokenizer, m.TokenizerRange)
	}
	for _, d := range r.Datasets {
		check("Dataset", d.Name, d.Path, d.PathRange)
	}
	for _, t := range r.Tasks {
		check("Task", t.Name, t.Path, t.PathRange)
	}
	sortDiagnostics(diags)
	return diags
}
