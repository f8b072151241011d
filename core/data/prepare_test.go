package data

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func readTokens(t *testing.T, path string) (ids []int32, shape []int) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Descr != "<i4" {
		t.Fatalf("%s: dtype %s, want <i4", path, a.Descr)
	}
	v, err := a.Int32()
	if err != nil {
		t.Fatal(err)
	}
	return v, a.Shape
}

func readMask(t *testing.T, path string) []uint8 {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Descr != "|u1" {
		t.Fatalf("%s: dtype %s, want |u1", path, a.Descr)
	}
	v, _ := a.Uint8()
	return v
}

// docsOf cuts a packed token stream at BOS and decodes each document.
func docsOf(tok *tokenizer.Tokenizer, ids []int32) []string {
	var docs []string
	start := -1
	for i := 0; i <= len(ids); i++ {
		if i == len(ids) || int(ids[i]) == tok.BOS {
			if start >= 0 {
				docs = append(docs, tok.Decode(ints(ids[start:i])))
			}
			start = i
		}
	}
	return docs
}

func TestPrepareText(t *testing.T) {
	tok := tok512(t)
	src := filepath.Join(sharedData(t), "corpora", "tinystories_val.txt")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	docs := SplitDocuments(string(raw))
	const L = 128
	ds := &recipe.Dataset{Name: "stories", Path: src, Format: "text", ValidationFraction: 0.1, Seed: 7}
	dirA := t.TempDir()
	p, err := Prepare(ds, tok, Options{Dir: dirA, SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	if p.Cached {
		t.Error("first Prepare reported a cache hit")
	}

	// The fraction is honoured exactly: ⌈0.1·N⌉ documents.
	if p.Documents != len(docs) || p.ValDocuments != int(math.Ceil(0.1*float64(len(docs)))) ||
		p.TrainDocuments+p.ValDocuments != p.Documents {
		t.Errorf("documents %d (train %d, val %d), want %d with ⌈N/10⌉ = %d validation",
			p.Documents, p.TrainDocuments, p.ValDocuments, len(docs), int(math.Ceil(0.1*float64(len(docs)))))
	}
	if p.Validation.MaskPath != "" || p.Train.MaskPath != "" {
		t.Error("text data got a mask")
	}

	// Round trip: the rows decode to the documents of each split, in file
	// order, the last one cut where the final partial row was dropped.
	train, shape := readTokens(t, p.Train.Path)
	if !reflect.DeepEqual(shape, []int{p.TrainRows, L}) {
		t.Fatalf("train shape %v, want [%d %d]", shape, p.TrainRows, L)
	}
	val, vshape := readTokens(t, p.Validation.Path)
	if !reflect.DeepEqual(vshape, []int{p.ValRows, L}) {
		t.Fatalf("validation shape %v, want [%d %d]", vshape, p.ValRows, L)
	}
	if train[0] != int32(tok.BOS) || val[0] != int32(tok.BOS) {
		t.Error("a split does not start with BOS")
	}
	gotTrain, gotVal := docsOf(tok, train), docsOf(tok, val)
	if len(gotTrain) > p.TrainDocuments || len(gotVal) > p.ValDocuments {
		t.Fatalf("decoded %d/%d documents, more than the %d/%d written", len(gotTrain), len(gotVal), p.TrainDocuments, p.ValDocuments)
	}
	isVal := splitValidation(len(docs), 0.1, 7)
	var wantTrain, wantVal []string
	for i, d := range docs {
		if isVal[i] {
			wantVal = append(wantVal, d)
		} else {
			wantTrain = append(wantTrain, d)
		}
	}
	checkDocs(t, "train", gotTrain, wantTrain)
	checkDocs(t, "validation", gotVal, wantVal)
	totalTokens := 0
	for _, d := range docs {
		totalTokens += len(tok.Encode(d, true, false))
	}
	if p.TrainTokens+p.ValTokens+p.DroppedTokens != totalTokens || p.DroppedTokens >= 2*L ||
		p.TrainTokens != p.TrainRows*L || p.TrainTargets != p.TrainRows*(L-1) {
		t.Errorf("tokens: train %d + val %d + dropped %d, want %d in all", p.TrainTokens, p.ValTokens, p.DroppedTokens, totalTokens)
	}

	// Same inputs in another directory: byte-identical files.
	dirB := t.TempDir()
	q, err := Prepare(ds, tok, Options{Dir: dirB, SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	if q.Key != p.Key {
		t.Error("same inputs gave different keys")
	}
	sameBytes(t, p.Train.Path, q.Train.Path, true)
	sameBytes(t, p.Validation.Path, q.Validation.Path, true)

	// A different seed gives a different split (and new file names).
	ds2 := *ds
	ds2.Seed = 8
	r, err := Prepare(&ds2, tok, Options{Dir: dirA, SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	if r.Key == p.Key || r.Train.Path == p.Train.Path {
		t.Error("a different seed reused the files")
	}
	sameBytes(t, p.Validation.Path, r.Validation.Path, false)
	if r.ValDocuments != p.ValDocuments {
		t.Errorf("validation documents %d with another seed, want %d", r.ValDocuments, p.ValDocuments)
	}

	// The cache: the same call again finds the files.
	c, err := Prepare(ds, tok, Options{Dir: dirA, SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cached {
		t.Error("second Prepare did not reuse the files")
	}
	c.Cached = false
	if !reflect.DeepEqual(c, p) {
		t.Errorf("cached description differs:\n%+v\n%+v", c, p)
	}
	// A damaged file is not reused.
	if err := os.WriteFile(p.Validation.Path, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Prepare(ds, tok, Options{Dir: dirA, SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	if d.Cached {
		t.Error("Prepare reused a damaged file")
	}
	sameBytes(t, d.Validation.Path, q.Validation.Path, true)
}

// checkDocs compares the documents decoded from a split's rows with the
// split's documents: all of them in order, except that the stream ends
// with the final partial row dropped, so the last decoded document may be
// cut and whole documents after it missing.
func checkDocs(t *testing.T, split string, got, want []string) {
	t.Helper()
	if len(got) == 0 || len(got) > len(want) {
		t.Fatalf("%s: decoded %d documents of %d", split, len(got), len(want))
	}
	for i, d := range got {
		last := i == len(got)-1
		if d != want[i] && !(last && strings.HasPrefix(want[i], d)) {
			t.Fatalf("%s document %d = %q, want %q", split, i, d, want[i])
		}
	}
}

func sameBytes(t *testing.T, a, b string, want bool) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(x, y) != want {
		t.Errorf("%s and %s: equal = %v, want %v", filepath.Base(a), filepath.Base(b), !want, want)
	}
}

func TestPrepareInvalidatesOnChange(t *testing.T) {
	tok := tok512(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "a.txt")
	write := func(s string) {
		if err := os.WriteFile(src, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(strings.Repeat("Once upon a time there was a cat.\n\n", 20))
	ds := &recipe.Dataset{Name: "a", Path: src, Format: "text", ValidationFraction: 0.25}
	out := filepath.Join(dir, "out")
	p, err := Prepare(ds, tok, Options{Dir: out, SeqLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	// A moved cache is still found, with the paths where the files now are.
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(out, moved); err != nil {
		t.Fatal(err)
	}
	m, err := Prepare(ds, tok, Options{Dir: moved, SeqLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Cached || filepath.Dir(m.Train.Path) != moved || filepath.Dir(m.Validation.Path) != moved {
		t.Errorf("moved cache: cached %v, files %s, %s", m.Cached, m.Train.Path, m.Validation.Path)
	}
	sameBytes(t, m.Train.Path, filepath.Join(moved, filepath.Base(p.Train.Path)), true)
	write(strings.Repeat("Once upon a time there was a dog.\n\n", 20))
	q, err := Prepare(ds, tok, Options{Dir: out, SeqLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	if q.Cached || q.Key == p.Key || q.Train.Path == p.Train.Path {
		t.Error("a changed source reused the old files")
	}
	// L is part of the key too.
	r, err := Prepare(ds, tok, Options{Dir: out, SeqLen: 17})
	if err != nil {
		t.Fatal(err)
	}
	if r.Cached || r.Key == q.Key {
		t.Error("a different L reused the files")
	}
}

func TestPrepareTextJSONL(t *testing.T) {
	tok := tok512(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "d.jsonl")
	var lines []string
	var want []string
	for i := range 12 {
		text := strings.Repeat("The little dog ran to the park. ", i%3+1) + "\n\nEnd."
		want = append(want, text)
		lines = append(lines, `{"text": `+quote(text)+`, "id": `+string(rune('0'+i%10))+`}`)
		if i == 5 {
			lines = append(lines, "", `{"text": "   "}`) // blank and whitespace-only: skipped
		}
	}
	if err := os.WriteFile(src, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := &recipe.Dataset{Name: "j", Path: src, Format: "jsonl"}
	p, err := Prepare(ds, tok, Options{Dir: dir, SeqLen: 8})
	if err != nil {
		t.Fatal(err)
	}
	if p.Documents != 12 || p.ValDocuments != 0 || p.Validation.Path != "" {
		t.Errorf("documents %d, validation %d %q; want 12, 0, none", p.Documents, p.ValDocuments, p.Validation.Path)
	}
	ids, _ := readTokens(t, p.Train.Path)
	got := docsOf(tok, ids)
	for i, d := range got {
		if d != want[i] && !(i == len(got)-1 && strings.HasPrefix(want[i], d)) {
			t.Errorf("document %d = %q, want %q", i, d, want[i])
		}
	}
	if len(got) < 11 {
		t.Errorf("decoded %d documents, want 12 (the last possibly cut)", len(got))
	}
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func TestPrepareErrors(t *testing.T) {
	tok := tok512(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small.txt")
	os.WriteFile(small, []byte("One.\n\nTwo.\n\nThree.\n"), 0o644)
	instr := filepath.Join(dir, "i.jsonl")
	os.WriteFile(instr, []byte(`{"prompt": "a", "response": "b"}`+"\n"), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"text": "a"}`+"\n"+`{"text": 3}`+"\n"), 0o644)
	tests := []struct {
		name string
		ds   recipe.Dataset
		opts Options
		want string
	}{
		{"short", recipe.Dataset{Name: "s", Path: small, Format: "text"}, Options{Dir: dir, SeqLen: 64}, "fewer than one row of L=64"},
		{"short validation", recipe.Dataset{Name: "s", Path: small, Format: "text", ValidationFraction: 0.3}, Options{Dir: dir, SeqLen: 7}, "validation split has"},
		{"seq len", recipe.Dataset{Name: "s", Path: small}, Options{Dir: dir, SeqLen: 1}, "sequence length 1"},
		{"format", recipe.Dataset{Name: "s", Path: small, Format: "csv"}, Options{Dir: dir, SeqLen: 4}, `unknown format "csv"`},
		{"missing", recipe.Dataset{Name: "s", Path: filepath.Join(dir, "nope.txt")}, Options{Dir: dir, SeqLen: 4}, "nope.txt"},
		{"instruct as jsonl", recipe.Dataset{Name: "s", Path: instr, Format: "jsonl"}, Options{Dir: dir, SeqLen: 4}, `i.jsonl:1: no "text" field`},
		{"bad line", recipe.Dataset{Name: "s", Path: bad, Format: "jsonl"}, Options{Dir: dir, SeqLen: 4}, `bad.jsonl:2: field "text": want a string`},
		{"template", recipe.Dataset{Name: "s", Path: instr, Format: "instruct"}, Options{Dir: dir, SeqLen: 4, Template: "{response}{prompt}"}, "before {prompt}"},
		{"prompt fills the row", recipe.Dataset{Name: "s", Path: instr, Format: "instruct"}, Options{Dir: dir, SeqLen: 2}, "prompt of L=2 tokens or more"},
		{"template twice", recipe.Dataset{Name: "s", Path: instr, Format: "instruct"}, Options{Dir: dir, SeqLen: 4, Template: "{prompt}{prompt}{response}"}, "exactly once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Prepare(&tt.ds, tok, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPrepareInstruct checks the loss masks against the text: in every
// example the unmasked tokens decode to the prompt and the masked ones to
// the response (EOS decodes to nothing), for both layouts.
func TestPrepareInstruct(t *testing.T) {
	tok := tok512(t)
	src := filepath.Join(sharedData(t), "instruct", "dolly_hhrlhf_train_small.jsonl")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	pairs, err := ParseInstruct(src, raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 1000 {
		t.Fatalf("%d pairs, want 1000", len(pairs))
	}
	const L = 512
	for _, packing := range []bool{false, true} {
		ds := &recipe.Dataset{Name: "dolly", Path: src, Format: "instruct", ValidationFraction: 0.05, Seed: 3}
		p, err := Prepare(ds, tok, Options{Dir: t.TempDir(), SeqLen: L, Packing: packing})
		if err != nil {
			t.Fatal(err)
		}
		if p.ValDocuments != 50 || p.TrainDocuments != 950 {
			t.Errorf("split %d/%d, want 950/50", p.TrainDocuments, p.ValDocuments)
		}
		var examples []example
		for _, seq := range []struct{ path, mask string }{{p.Train.Path, p.Train.MaskPath}, {p.Validation.Path, p.Validation.MaskPath}} {
			ids, shape := readTokens(t, seq.path)
			mask := readMask(t, seq.mask)
			if shape[1] != L || len(mask) != len(ids) {
				t.Fatalf("shape %v, mask of %d", shape, len(mask))
			}
			if packing {
				examples = append(examples, cutExamples(t, tok, ids, mask)...)
			} else {
				for r := 0; r < shape[0]; r++ {
					row := cutExamples(t, tok, ids[r*L:(r+1)*L], mask[r*L:(r+1)*L])
					if len(row) != 1 {
						t.Fatalf("row %d holds %d examples", r, len(row))
					}
					examples = append(examples, row...)
				}
			}
		}
		// Train examples in file order, then validation ones; match them to
		// the pairs by the split.
		isVal := splitValidation(len(pairs), 0.05, 3)
		var order []Pair
		for _, v := range []bool{false, true} {
			for i, pr := range pairs {
				if isVal[i] == v {
					order = append(order, pr)
				}
			}
		}
		skipped := 0
		k := 0
		for _, pr := range order {
			if k >= len(examples) {
				t.Fatalf("only %d examples written", len(examples))
			}
			e := examples[k]
			if e.prompt != pr.Prompt {
				// Unpacked rows drop examples whose prompt fills the row.
				if !packing && len(tok.Encode(pr.Prompt, true, false)) >= L {
					skipped++
					continue
				}
				t.Fatalf("example %d (line %d): prompt %q, want %q", k, pr.Line, e.prompt, pr.Prompt)
			}
			k++
			if e.truncated {
				if packing || !strings.HasPrefix(pr.Response, e.response) {
					t.Errorf("line %d: cut response %q is not a prefix of %q", pr.Line, e.response, pr.Response)
				}
				continue
			}
			if e.response != pr.Response {
				t.Errorf("line %d: masked tokens decode to %q, want the response %q", pr.Line, e.response, pr.Response)
			}
		}
		if k != len(examples) || skipped != p.Skipped {
			t.Errorf("matched %d of %d examples, skipped %d (reported %d)", k, len(examples), skipped, p.Skipped)
		}
		if packing && (p.Truncated != 0 || p.Skipped != 0) {
			t.Errorf("packing truncated %d, skipped %d", p.Truncated, p.Skipped)
		}
		if !packing && p.Truncated == 0 {
			t.Error("no example was cut at L=512; the test does not cover truncation")
		}
	}
}

type example struct {
	prompt, response string
	truncated        bool // no EOS: cut at the row's end
}

// cutExamples splits a token stream at BOS and decodes each example's
// unmasked prefix and masked suffix, checking the mask's shape: zeros, then
// ones through EOS, then only padding (EOS, mask 0).
func cutExamples(t *testing.T, tok *tokenizer.Tokenizer, ids []int32, mask []uint8) []example {
	t.Helper()
	var out []example
	for i := 0; i < len(ids); {
		if int(ids[i]) != tok.BOS {
			// Only padding may follow the last example.
			for j := i; j < len(ids); j++ {
				if int(ids[j]) != tok.EOS || mask[j] != 0 {
					t.Fatalf("position %d: token %d mask %d outside any example", j, ids[j], mask[j])
				}
			}
			break
		}
		end := i + 1
		for end < len(ids) && int(ids[end]) != tok.BOS && !(end > i && int(ids[end-1]) == tok.EOS && mask[end-1] == 1) {
			end++
		}
		k := i
		for k < end && mask[k] == 0 {
			k++
		}
		for j := k; j < end; j++ {
			if mask[j] != 1 {
				t.Fatalf("position %d: mask 0 inside the response", j)
			}
		}
		eos := end > k && int(ids[end-1]) == tok.EOS
		out = append(out, example{
			prompt:    tok.Decode(ints(ids[i:k])),
			response:  tok.Decode(ints(ids[k:end])),
			truncated: !eos,
		})
		i = end
	}
	return out
}

func TestEncodePairTemplate(t *testing.T) {
	tok := tok512(t)
	tmpl := Template("Q: {prompt}\nA:{response}\n")
	ids, mask, err := EncodePair(tok, tmpl, Pair{Prompt: "Who {is} it?", Response: " The cat."})
	if err != nil {
		t.Fatal(err)
	}
	k := slices.Index(mask, 1)
	if got := tok.Decode(ints(ids[:k])); got != "Q: Who {is} it?\nA:" {
		t.Errorf("prompt part %q", got)
	}
	if got := tok.Decode(ints(ids[k:])); got != " The cat.\n" {
		t.Errorf("response part %q", got)
	}
	if int(ids[0]) != tok.BOS || int(ids[len(ids)-1]) != tok.EOS || mask[len(mask)-1] != 1 {
		t.Error("want BOS first and a scored EOS last")
	}
	// Joined tokenization, split at the boundary: the tokens are exactly
	// those of the whole text.
	want := tok.Encode("Q: Who {is} it?\nA: The cat.\n", true, true)
	if !slices.Equal(ints(ids), want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
}

func TestSplitValidation(t *testing.T) {
	tests := []struct {
		n    int
		f    float64
		want int
	}{
		{10, 0.1, 1}, {30, 0.1, 3}, {7, 0.5, 4}, {1, 0.5, 0}, {0, 0.5, 0}, {100, 0, 0}, {3, 0.99, 2}, {1000, 0.05, 50}, {4302, 0.1, 431},
	}
	for _, tt := range tests {
		if got := validationCount(tt.n, tt.f); got != tt.want {
			t.Errorf("validationCount(%d, %g) = %d, want %d", tt.n, tt.f, got, tt.want)
		}
		v := splitValidation(tt.n, tt.f, 1)
		c := 0
		for _, b := range v {
			if b {
				c++
			}
		}
		if c != tt.want {
			t.Errorf("splitValidation(%d, %g) marks %d", tt.n, tt.f, c)
		}
	}
	// Each index is equally likely to be held out: over many seeds every
	// one of 10 items is chosen about 30% of the time.
	counts := make([]int, 10)
	const seeds = 20000
	for s := range seeds {
		for i, b := range splitValidation(10, 0.3, int64(s)) {
			if b {
				counts[i]++
			}
		}
	}
	for i, c := range counts {
		if f := float64(c) / seeds; math.Abs(f-0.3) > 0.015 {
			t.Errorf("item %d held out %.3f of the time, want 0.3", i, f)
		}
	}
}

// TestPermutationStable pins the permutation to the PCG algorithm: a
// change here would silently change every split.
func TestPermutationStable(t *testing.T) {
	got := splitValidation(12, 0.25, 42)
	want := []bool{false, false, false, false, true, true, false, false, true, false, false, false}
	if !slices.Equal(got, want) {
		t.Errorf("splitValidation(12, 0.25, 42) = %v, want %v", got, want)
	}
}
