package recipe

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// FormatDiagnostic renders one diagnostic as a single line:
// "file:line:col: error: summary; detail" (no position when the diagnostic
// has no subject, no "; detail" when it has no detail).
func FormatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	switch d.Severity {
	case hcl.DiagWarning:
		b.WriteString("warning: ")
	default:
		b.WriteString("error: ")
	}
	b.WriteString(oneLine(d.Summary))
	if d.Detail != "" {
		b.WriteString("; ")
		b.WriteString(oneLine(d.Detail))
	}
	return b.String()
}

// oneLine folds the multi-line details HCL sometimes writes into one line so
// every diagnostic stays greppable as file:line:col.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// WriteDiagnostics writes each diagnostic as a FormatDiagnostic line followed,
// when its file is in files, by the source line and a caret under the
// subject.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) error {
	bw := bufio.NewWriter(w)
	for _, d := range diags {
		if d == nil {
			continue
		}
		bw.WriteString(FormatDiagnostic(d))
		bw.WriteByte('\n')
		if d.Subject != nil {
			if f := files[d.Subject.Filename]; f != nil {
				writeSnippet(bw, f.Bytes, *d.Subject)
			}
		}
	}
	return bw.Flush()
}

// writeSnippet prints the subject's first line with a caret run under the
// part of the subject on that line. The caret line copies the tabs of the
// source so it lines up in any tab width.
func writeSnippet(w *bufio.Writer, src []byte, rng hcl.Range) {
	start := rng.Start.Byte
	if start < 0 || start > len(src) {
		return
	}
	lineStart := bytes.LastIndexByte(src[:start], '\n') + 1
	lineEnd := len(src)
	if i := bytes.IndexByte(src[start:], '\n'); i >= 0 {
		lineEnd = start + i
	}
	line := bytes.TrimRight(src[lineStart:lineEnd], "\r")
	end := rng.End.Byte
	if end > lineStart+len(line) || end < start {
		end = lineStart + len(line)
	}
	if start > lineStart+len(line) {
		start = lineStart + len(line)
	}
	gutter := fmt.Sprintf("%5d | ", rng.Start.Line)
	fmt.Fprintf(w, "%s%s\n", gutter, line)
	w.WriteString(strings.Repeat(" ", len(gutter)-2) + "| ")
	for _, r := range string(src[lineStart:start]) {
		if r == '\t' {
			w.WriteByte('\t')
		} else {
			w.WriteByte(' ')
		}
	}
	w.WriteString(strings.Repeat("^", max(1, utf8.RuneCount(src[start:end]))))
	w.WriteByte('\n')
}

// DiagnosticsError wraps error diagnostics as an error whose message is
// their FormatDiagnostic lines.
type DiagnosticsError struct{ Diags hcl.Diagnostics }

func (e *DiagnosticsError) Error() string {
	lines := make([]string, 0, len(e.Diags))
	for _, d := range e.Diags {
		if d != nil {
			lines = append(lines, FormatDiagnostic(d))
		}
	}
	return strings.Join(lines, "\n")
}

// sortDiagnostics orders diagnostics by file and position; diagnostics
// without a subject (command-line problems) come first. gohcl reports in map
// order, so without this the output would not be reproducible.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
}

// editDistance is the optimal-string-alignment distance between a and b, in
// runes: Levenshtein plus adjacent transpositions, the commonest typo
// ("modle" for "model").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// suggest returns the candidate closest to given, or "" when none is close:
// within a third of the name's length (at least 1, at most 3 edits), the
// threshold HCL uses for its own suggestions scaled for short names.
func suggest(given string, candidates []string) string {
	limit := min(3, max(1, utf8.RuneCountInString(given)/3))
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if d := editDistance(given, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// didYouMean formats a suggestion sentence, or "" when there is none. With a
// prefix (a reference such as "model.") the suggestion is written as a
// reference, else as a quoted string.
func didYouMean(given string, candidates []string, prefix string) string {
	s := suggest(given, candidates)
	switch {
	case s == "":
		return ""
	case prefix == "":
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return fmt.Sprintf(" Did you mean %s%s?", prefix, s)
}

// at renders a range's start as file:line.
func at(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }
