package pipeline

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Summary renders a finished run for people: one row per evaluation (any
// pass that recorded dataset.<name>.loss or task.<name>.acc metrics) with
// the model, its parameters, loss, perplexity and accuracy per dataset and
// task, then the outputs written. It reads only the manifest, so `whittle
// report` can print it for any run directory.
func (m *Manifest) Summary(w io.Writer) error {
	type row struct {
		name, model string
		params      string
		values      map[string]string
	}
	var rows []row
	colSet := map[string]bool{}
	for _, p := range m.Passes {
		r := row{name: p.Name, model: "-", params: "-", values: map[string]string{}}
		for k, v := range p.Metrics {
			f, isNum := number(v)
			switch {
			case k == "model":
				r.model = fmt.Sprint(v)
			case k == "params" && isNum:
				r.params = FormatCount(int64(f))
			case isNum && (strings.HasPrefix(k, "dataset.") && (strings.HasSuffix(k, ".loss") || strings.HasSuffix(k, ".ppl")) ||
				strings.HasPrefix(k, "task.") && strings.HasSuffix(k, ".acc")):
				col := strings.TrimPrefix(strings.TrimPrefix(k, "dataset."), "task.")
				colSet[col] = true
				if strings.HasSuffix(k, ".acc") {
					r.values[col] = fmt.Sprintf("%.1f%%", 100*f)
				} else {
					r.values[col] = fmt.Sprintf("%.4g", f)
				}
			}
		}
		if len(r.values) > 0 {
			rows = append(rows, r)
		}
	}
	cols := make([]string, 0, len(colSet))
	for c := range colSet {
		cols = append(cols, c)
	}
	// Losses before perplexities before accuracies, each alphabetical.
	rank := func(c string) int {
		switch {
		case strings.HasSuffix(c, ".loss"):
			return 0
		case strings.HasSuffix(c, ".ppl"):
			return 1
		}
		return 2
	}
	sort.Slice(cols, func(i, j int) bool {
		if rank(cols[i]) != rank(cols[j]) {
			return rank(cols[i]) < rank(cols[j])
		}
		return cols[i] < cols[j]
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rows) > 0 {
		fmt.Fprintf(tw, "EVALUATION\tMODEL\tPARAMS\t%s\n", strings.ToUpper(strings.Join(cols, "\t")))
		for _, r := range rows {
			vals := make([]string, len(cols))
			for i, c := range cols {
				if vals[i] = r.values[c]; vals[i] == "" {
					vals[i] = "-"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.name, r.model, r.params, strings.Join(vals, "\t"))
		}
		fmt.Fprintln(tw)
	}
	for _, o := range m.Outputs {
		fmt.Fprintf(tw, "output %s\t%s\n", o.Name, o.Path)
	}
	return tw.Flush()
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
