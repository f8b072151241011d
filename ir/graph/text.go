package graph

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteText prints the graph for people and diffs: a header, one line per
// op (its inputs and output with named dimensions, its options and its
// parameters), the ops of each decoder layer under a "layer N" line, and
// then each prunable axis followed by the parameter dimensions it cuts,
// one per line.
func (g *Graph) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "graph %s: %d parameters in %d tensors\n", g.Name, g.ParamCount(), len(g.Params))
	fmt.Fprintf(bw, "%%%d: %v token ids\n", g.Input.ID, g.Input.Shape)
	layer := -1
	for _, op := range g.Ops {
		if op.Layer != layer {
			layer = op.Layer
			if layer >= 0 {
				fmt.Fprintf(bw, "layer %d\n", layer)
			} else {
				fmt.Fprintln(bw, "final")
			}
		}
		fmt.Fprintf(bw, "  %s\n", opLine(op))
	}
	fmt.Fprintf(bw, "output %%%d\n", g.Output.ID)
	fmt.Fprintln(bw, "axes")
	for _, a := range g.Axes {
		fmt.Fprintf(bw, "  %s=%d", a.ID(), a.Units)
		if a.GroupedBy != "" {
			fmt.Fprintf(bw, " grouped by %s", a.GroupedBy)
		}
		if a.Within != "" {
			fmt.Fprintf(bw, " within each of %s", a.Within)
		}
		fmt.Fprintln(bw)
		for _, c := range a.Cuts {
			fmt.Fprintf(bw, "    %s[%d]", c.Tensor, c.Dim)
			if c.Block > 1 {
				fmt.Fprintf(bw, " in blocks of %d", c.Block)
			}
			fmt.Fprintln(bw)
		}
	}
	return bw.Flush()
}

func opLine(op *Op) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%%%d = %s %s", op.Output.ID, op.Kind, op.Name)
	if a := op.Attrs.String(); a != "" {
		fmt.Fprintf(&sb, " {%s}", a)
	}
	sb.WriteString(" (")
	for i, v := range op.Inputs {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%%%d %v", v.ID, v.Shape)
	}
	fmt.Fprintf(&sb, ") -> %v", op.Output.Shape)
	for _, p := range op.Params {
		fmt.Fprintf(&sb, "; %s %s %v", p.Role, p.Name, p.Shape)
	}
	return sb.String()
}
