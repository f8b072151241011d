package passutil

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func TestPermutation(t *testing.T) {
	for _, n := range []int{1, 2, 7, 100} {
		p := Permutation(n, 0, 42)
		s := slices.Clone(p)
		slices.Sort(s)
		for i, v := range s {
			if v != i {
				t.Fatalf("Permutation(%d) = %v is not a permutation", n, p)
			}
		}
		if !slices.Equal(p, Permutation(n, 0, 42)) {
			t.Errorf("Permutation(%d) is not deterministic", n)
		}
		// A partial shuffle is the prefix of the full one.
		if k := (n + 1) / 2; !slices.Equal(Permutation(n, k, 42), p[:k]) {
			t.Errorf("Permutation(%d, %d) is not the prefix of the full permutation", n, k)
		}
	}
	if slices.Equal(Permutation(100, 0, 1), Permutation(100, 0, 2)) {
		t.Error("seeds 1 and 2 give the same permutation")
	}
	// Uniform: each of the 6 orders of 3 items ~1000 times in 6000 seeds
	// (standard deviation ≈ 29; the bound is over 5σ).
	counts := map[string]int{}
	for seed := int64(0); seed < 6000; seed++ {
		counts[fmt.Sprint(Permutation(3, 0, seed))]++
	}
	if len(counts) != 6 {
		t.Fatalf("%d distinct orders of 3 items, want 6", len(counts))
	}
	for k, c := range counts {
		if c < 850 || c > 1150 {
			t.Errorf("order %s drawn %d times of 6000", k, c)
		}
	}
}

func TestBelowUnbiasedLimit(t *testing.T) {
	// below rejects values under 2^64 mod n; for n = 3 that is 1.
	n := uint64(3)
	if limit := -n % n; limit != 1 {
		t.Fatalf("2^64 mod 3 computed as %d", limit)
	}
	var s splitmix64 = 5
	for i := 0; i < 1000; i++ {
		if v := s.below(7); v >= 7 {
			t.Fatalf("below(7) = %d", v)
		}
	}
}

func writeRowsFile(t *testing.T, dir string, rows, cols int) backend.Sequences {
	t.Helper()
	tok := make([]int32, rows*cols)
	mask := make([]uint8, rows*cols)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			tok[r*cols+c] = int32(100*r + c)
			mask[r*cols+c] = uint8(r % 2)
		}
	}
	s := backend.Sequences{Path: filepath.Join(dir, "d-train-L3-abc.npy"), MaskPath: filepath.Join(dir, "d-train-L3-abc.mask.npy")}
	if err := npy.WriteInt32(s.Path, []int{rows, cols}, tok); err != nil {
		t.Fatal(err)
	}
	if err := npy.WriteUint8(s.MaskPath, []int{rows, cols}, mask); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSampleRows(t *testing.T) {
	dir := t.TempDir()
	src := writeRowsFile(t, dir, 10, 3)
	out, n, err := SampleRows(src, dir, "calib", 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, err := contentKey(src)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 || filepath.Base(out.Path) != "d-train-L3-calib-"+key[:16]+"-n4-of10-s1.npy" || out.MaskPath != strings.TrimSuffix(out.Path, ".npy")+".mask.npy" {
		t.Fatalf("SampleRows = %+v, %d", out, n)
	}
	// The name follows the content, not the source's name.
	renamed := backend.Sequences{Path: filepath.Join(dir, "d-train-L3-xyz.npy"), MaskPath: filepath.Join(dir, "d-train-L3-xyz.mask.npy")}
	for _, p := range [][2]string{{src.Path, renamed.Path}, {src.MaskPath, renamed.MaskPath}} {
		b, _ := os.ReadFile(p[0])
		if err := os.WriteFile(p[1], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if again, _, err := SampleRows(renamed, dir, "calib", 4, 1); err != nil || again != out {
		t.Errorf("the same content under another name sampled to %+v (%v), want %+v", again, err, out)
	}
	a, err := npy.Read(out.Path)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := a.Int32()
	m, err := npy.Read(out.MaskPath)
	if err != nil {
		t.Fatal(err)
	}
	mv, _ := m.Uint8()
	if !slices.Equal(a.Shape, []int{4, 3}) || !slices.Equal(m.Shape, []int{4, 3}) {
		t.Fatalf("shapes %v %v", a.Shape, m.Shape)
	}
	for i, r := range Permutation(10, 4, 1) {
		if !slices.Equal(v[i*3:i*3+3], []int32{int32(100 * r), int32(100*r + 1), int32(100*r + 2)}) {
			t.Errorf("row %d = %v, want source row %d", i, v[i*3:i*3+3], r)
		}
		if mv[i*3] != uint8(r%2) {
			t.Errorf("mask row %d does not follow its tokens (source row %d)", i, r)
		}
	}

	// A second call reuses the file.
	st1, _ := os.Stat(out.Path)
	if _, _, err := SampleRows(src, dir, "calib", 4, 1); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(out.Path)
	if !os.SameFile(st1, st2) {
		t.Error("the sample was written again instead of reused")
	}

	// Limit restricts the rows drawn from; n ≤ 0 or too large means all.
	lim := src
	lim.Limit = 5
	out, n, err = SampleRows(lim, dir, "all", 0, 3)
	if err != nil || n != 5 {
		t.Fatalf("SampleRows(limit 5) = %d rows, %v", n, err)
	}
	a, _ = npy.Read(out.Path)
	v, _ = a.Int32()
	var firsts []int32
	for i := 0; i < 5; i++ {
		firsts = append(firsts, v[i*3]/100)
	}
	slices.Sort(firsts)
	if !slices.Equal(firsts, []int32{0, 1, 2, 3, 4}) {
		t.Errorf("rows drawn from the first 5: %v", firsts)
	}
	if _, n, _ := SampleRows(src, dir, "big", 50, 3); n != 10 {
		t.Errorf("n = 50 of 10 rows gave %d", n)
	}
}

func TestSampleRowsErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := SampleRows(backend.Sequences{Path: filepath.Join(dir, "missing.npy")}, dir, "x", 1, 0); err == nil {
		t.Error("a missing file was sampled")
	}
	flat := filepath.Join(dir, "flat.npy")
	if err := npy.WriteInt32(flat, []int{6}, make([]int32, 6)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := SampleRows(backend.Sequences{Path: flat}, dir, "x", 1, 0); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("1-d token file: %v", err)
	}
	src := writeRowsFile(t, dir, 4, 3)
	if err := npy.WriteUint8(src.MaskPath, []int{4, 2}, make([]uint8, 8)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := SampleRows(src, dir, "x", 2, 0); err == nil || !strings.Contains(err.Error(), "mask shape") {
		t.Errorf("mismatched mask: %v", err)
	}
}

func TestResolveTrainDefaults(t *testing.T) {
	cfg := ir.Config{MaxSeq: 64, Layers: make([]ir.LayerConfig, 2)}
	steps := 40
	got, err := ResolveTrain(nil, cfg, TrainOptions{Steps: &steps})
	if err != nil {
		t.Fatal(err)
	}
	want := Train{Mode: "full", Steps: 40, Batch: 8, GradAccum: 1, SeqLen: 64,
		Optim:   backend.OptimConfig{LR: 1e-4, MinLR: 1e-5, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1},
		Shuffle: true, LogEvery: 2, CheckpointEvery: 4}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults\n%+v\nwant\n%+v", got, want)
	}
	// A long context defaults to 256 tokens.
	cfg.MaxSeq = 4096
	got, _ = ResolveTrain(nil, cfg, TrainOptions{Steps: &steps})
	if got.SeqLen != 256 {
		t.Errorf("seq_len default %d with a 4096 context, want 256", got.SeqLen)
	}
	zero := 0
	got, _ = ResolveTrain(nil, cfg, TrainOptions{Steps: &steps, CheckpointEvery: &zero})
	if got.CheckpointEvery != 0 {
		t.Errorf("checkpoint_every = 0 gave %d", got.CheckpointEvery)
	}
	nan := math.NaN()
	if _, err := ResolveTrain(nil, cfg, TrainOptions{Steps: &steps, LR: &nan}); err == nil {
		t.Error("lr = NaN accepted")
	}
}

// TestResolveTrainRouterAux: router_aux_weight passes through for a
// mixture-of-experts model and is refused when negative or on a dense one.
func TestResolveTrainRouterAux(t *testing.T) {
	steps := 10
	moe := irtest.MoEFamilies()["mixtral"]
	dense := irtest.Families()["llama"]
	for _, c := range []struct {
		name string
		cfg  ir.Config
		w    float64
		err  string
	}{
		{"moe", moe, 0.01, ""},
		{"zero on dense", dense, 0, ""},
		{"dense", dense, 0.01, "no routed layers"},
		{"negative", moe, -1, "non-negative"},
		{"NaN", moe, math.NaN(), "non-negative"},
	} {
		w := c.w
		got, err := ResolveTrain(nil, c.cfg, TrainOptions{Steps: &steps, RouterAuxWeight: &w})
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err == "" && got.RouterAuxWeight != c.w:
			t.Errorf("%s: router_aux_weight %g, want %g", c.name, got.RouterAuxWeight, c.w)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.err)
		}
	}
}

func TestSameVocabulary(t *testing.T) {
	tok := &tokenizer.Tokenizer{Pieces: []string{"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", " a", "<0x41>"},
		Scores: []float32{0, 0, 0, -1, -2, -3, 0}, BOS: 1, EOS: 2, UNK: 0}
	// The same vocabulary as SentencePiece spells it.
	b, err := tokenizer.MarshalSentencePiece(tok)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := tokenizer.ParseSentencePiece(b)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Pieces[5] == tok.Pieces[5] {
		t.Fatalf("test premise: SentencePiece spells %q the same", tok.Pieces[5])
	}
	if err := SameVocabulary(tok, sp); err != nil {
		t.Errorf("one vocabulary in two spellings: %v", err)
	}
	other := &tokenizer.Tokenizer{Pieces: slices.Clone(tok.Pieces), Scores: tok.Scores, BOS: 1, EOS: 2, UNK: 0}
	other.Pieces[4] = "b"
	if err := SameVocabulary(tok, other); err == nil || !strings.Contains(err.Error(), "token 4") {
		t.Errorf("different piece: %v", err)
	}
	short := &tokenizer.Tokenizer{Pieces: tok.Pieces[:6], Scores: tok.Scores[:6], BOS: 1, EOS: 2, UNK: 0}
	if err := SameVocabulary(tok, short); err == nil {
		t.Error("different sizes accepted")
	}
}

func TestPerplexity(t *testing.T) {
	if got := Perplexity(math.Log(7)); math.Abs(got-7) > 1e-12 {
		t.Errorf("Perplexity(ln 7) = %g", got)
	}
	if got := Perplexity(1e6); got != math.MaxFloat64 {
		t.Errorf("Perplexity(1e6) = %g, want a finite cap", got)
	}
}
