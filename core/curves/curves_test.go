package curves

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"

	"github.com/whittle-ml/whittle/core/pipeline"
)

const history = `step,loss,lr,grad_norm,tokens,val_loss,val_kl
1,3.5,0.001,1.2,64,,
2,3.1,0.001,1.1,128,3.3,
3,2.9,0.001,1.0,192,,
`

func TestParse(t *testing.T) {
	s, err := parse(strings.NewReader(history), "h.csv")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Loss) != 3 || s.Tokens[2] != 192 || s.Loss[1] != 3.1 || len(s.ValLoss) != 1 || s.ValTokens[0] != 128 || s.ValLoss[0] != 3.3 {
		t.Errorf("parsed %+v", s)
	}
	for _, c := range []struct{ in, want string }{
		{"", "h.csv:1"},
		{"step,lr\n1,2\n", "lacks tokens or loss"},
		{"tokens,loss\n64,abc\n", "h.csv:2: loss \"abc\""},
		{"tokens,loss\n64,1\n,2\n", "h.csv:3: no tokens"},
		{"tokens,loss\n64,NaN\n", "not a finite number"},
		{"tokens,loss\n64,1,9\n", "h.csv:2"},
	} {
		if _, err := parse(strings.NewReader(c.in), "h.csv"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parse(%q): %v, want an error containing %q", c.in, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(history))
	f.Add([]byte("tokens,loss,val_loss\n1,2,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parse(strings.NewReader(string(data)), "f.csv")
		if err == nil && (len(s.Tokens) != len(s.Loss) || len(s.ValTokens) != len(s.ValLoss)) {
			t.Fatalf("unbalanced series %+v", s)
		}
	})
}

// TestReadDraw lays out a run directory with one training pass and one
// that wrote no history, then draws PNG and SVG files of the asked size.
func TestReadDraw(t *testing.T) {
	run := t.TempDir()
	man := &pipeline.Manifest{Passes: []pipeline.PassRecord{{Index: 0, Name: "prune", Kind: "prune-width"}, {Index: 1, Name: "kd", Kind: "distill"}}}
	dir := pipeline.PassDir(run, 1, "kd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, HistoryFile), []byte(history), 0o644); err != nil {
		t.Fatal(err)
	}
	series, err := Read(run, man)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || series[0].Pass != "kd" || len(series[0].Loss) != 3 {
		t.Fatalf("series %+v", series)
	}
	out := filepath.Join(t.TempDir(), "c.png")
	if err := Draw(series, "t", out, 4*vg.Inch, 3*vg.Inch); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 4*96 || cfg.Height != 3*96 { // gonum renders PNG at 96 dpi
		t.Errorf("PNG %d×%d", cfg.Width, cfg.Height)
	}
	svg := filepath.Join(t.TempDir(), "c.svg")
	if err := Draw(series, "t", svg, 4*vg.Inch, 3*vg.Inch); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(svg); !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "kd objective") {
		t.Error("SVG lacks the drawing or the legend")
	}
	if err := Draw(nil, "t", out, vg.Inch, vg.Inch); err == nil {
		t.Error("nothing to draw, yet it drew")
	}
	if err := Draw(series, "t", filepath.Join(t.TempDir(), "noext"), vg.Inch, vg.Inch); err == nil {
		t.Error("a file without an extension was accepted")
	}
}
