package conformance

import (
	"bufio"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/ir/llama2c"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// fixture is a model written as a Hugging Face directory, its golden
// twin, and token data for it.
type fixture struct {
	name string
	dir  string
	m    *ir.Model
	g    *golden
	tok  *tokenizer.Tokenizer
	// shared is the shared/data directory the fixture came from.
	shared string

	seqs     [][]int // the rows of data
	data     backend.Sequences
	masked   backend.Sequences // same rows, with mask
	mask     [][]uint8
	val      backend.Sequences // other rows, for validation
	valSeqs  [][]int
	choices  []backend.ChoiceItem
	lastWord []backend.LastWordItem
}

// tinyConfig is a two-layer model whose layers differ in width (as a
// pruned model's do), with grouped-query attention in both.
func tinyConfig(tied bool, hidden int, layers []ir.LayerConfig) ir.Config {
	return ir.Config{
		Arch: "llama", Vocab: 32, Hidden: hidden, Layers: layers,
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 16, Tied: tied, BOS: 1, EOS: 2,
	}
}

// randomModel fills cfg with random weights drawn from seed: matrices
// from N(0, σ²) with σ large enough that attention and the MLP are far
// from linear, norm weights around 1.
func randomModel(cfg ir.Config, seed uint64) (*ir.Model, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	names, shapes := cfg.ExpectedShapes()
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: fmt.Sprintf("random(%d)", seed)}
	for _, name := range names {
		shape := shapes[name]
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		if len(shape) == 1 {
			for i := range v {
				v[i] = float32(1 + 0.2*rng.NormFloat64())
			}
		} else {
			sigma := 0.5 / float64(shape[1]) * 4
			if name == ir.NameEmbed {
				sigma = 1
			}
			for i := range v {
				v[i] = float32(sigma * rng.NormFloat64())
			}
		}
		m.Tensors[name] = ir.FromFloat32(ir.F32, shape, v)
	}
	return m, m.Validate()
}

// newFixture saves m under dir/name and prepares data: nSeq rows of seqLen
// tokens drawn by draw (or given rows), a random mask, validation rows,
// choice and last-word items.
func newFixture(root, name string, m *ir.Model, tok *tokenizer.Tokenizer, rows, valRows [][]int, rng *rand.Rand) (*fixture, error) {
	f := &fixture{name: name, dir: filepath.Join(root, name, "model"), m: m, tok: tok, seqs: rows, valSeqs: valRows}
	if err := hf.Save(m, f.dir, hf.SaveOptions{}); err != nil {
		return nil, err
	}
	// The golden model reads the weights back as a backend would.
	saved, err := hf.Load(f.dir)
	if err != nil {
		return nil, err
	}
	f.m = saved
	if f.g, err = newGolden(saved); err != nil {
		return nil, err
	}
	data := filepath.Join(root, name)
	if f.data.Path, err = writeTokens(filepath.Join(data, "tokens.npy"), rows); err != nil {
		return nil, err
	}
	if f.val.Path, err = writeTokens(filepath.Join(data, "val.npy"), valRows); err != nil {
		return nil, err
	}
	// A mask like SFT's: a prompt prefix of random length is not scored,
	// and a row's tail is padding.
	l := len(rows[0])
	f.mask = make([][]uint8, len(rows))
	flat := make([]uint8, 0, len(rows)*l)
	for i := range rows {
		f.mask[i] = make([]uint8, l)
		p := 1 + rng.IntN(l/2)
		end := l - rng.IntN(l/4+1)
		for j := p; j < end; j++ {
			f.mask[i][j] = 1
		}
		flat = append(flat, f.mask[i]...)
	}
	f.masked = backend.Sequences{Path: f.data.Path, MaskPath: filepath.Join(data, "mask.npy")}
	if err := npy.WriteUint8(f.masked.MaskPath, []int{len(rows), l}, flat); err != nil {
		return nil, err
	}
	return f, nil
}

func writeTokens(path string, rows [][]int) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	flat := make([]int32, 0, len(rows)*len(rows[0]))
	for _, r := range rows {
		for _, id := range r {
			flat = append(flat, int32(id))
		}
	}
	return path, npy.WriteInt32(path, []int{len(rows), len(rows[0])}, flat)
}

func randomRows(rng *rand.Rand, n, l, vocab int) [][]int {
	rows := make([][]int, n)
	for i := range rows {
		rows[i] = make([]int, l)
		for j := range rows[i] {
			rows[i][j] = rng.IntN(vocab)
		}
	}
	return rows
}

func randomTokens(rng *rand.Rand, n, vocab int) []int {
	return randomRows(rng, 1, n, vocab)[0]
}

// familyFixtures builds one random model per family (irtest.Families:
// every family option on, sliding windows shorter than the rows; and
// irtest.MoEFamilies: routed experts, a shared expert, a dense layer among
// MoE ones), each with its own random rows.
func familyFixtures(root string) ([]*fixture, error) {
	fams := irtest.Families()
	for name, cfg := range irtest.MoEFamilies() {
		fams[name] = cfg
	}
	var out []*fixture
	for i, name := range slices.Sorted(maps.Keys(fams)) {
		rng := rand.New(rand.NewPCG(uint64(100+i), 5))
		m, err := randomModel(fams[name], uint64(100+i))
		if err != nil {
			return nil, fmt.Errorf("family %s: %w", name, err)
		}
		f, err := newFixture(root, "family-"+name, m, nil, randomRows(rng, 4, 12, 32), randomRows(rng, 2, 12, 32), rng)
		if err != nil {
			return nil, fmt.Errorf("fixture %s: %w", name, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// tinyFixtures builds the random student and teacher models.
func tinyFixtures(root string) (student, tiedStudent, teacher *fixture, err error) {
	rng := rand.New(rand.NewPCG(7, 11))
	layers := []ir.LayerConfig{{Heads: 4, KVHeads: 2, HeadDim: 4, MLP: 24}, {Heads: 2, KVHeads: 1, HeadDim: 4, MLP: 12}}
	rows := randomRows(rng, 6, 12, 32)
	val := randomRows(rng, 3, 12, 32)
	build := func(name string, cfg ir.Config, seed uint64) (*fixture, error) {
		m, err := randomModel(cfg, seed)
		if err != nil {
			return nil, err
		}
		f, err := newFixture(root, name, m, nil, rows, val, rng)
		if err != nil {
			return nil, fmt.Errorf("fixture %s: %w", name, err)
		}
		// Options of different lengths, one longer than the 16 positions
		// and one whose continuation fills all 16; character counts (the
		// acc_norm divisor) on all but the last item.
		for i := 0; i < 5; i++ {
			it := backend.ChoiceItem{Gold: rng.IntN(3)}
			for j := 0; j < 3; j++ {
				it.Contexts = append(it.Contexts, randomTokens(rng, 1+rng.IntN(6), 32))
				it.Continuations = append(it.Continuations, randomTokens(rng, 1+rng.IntN(4), 32))
				if i < 4 {
					it.ContinuationChars = append(it.ContinuationChars, 1+rng.IntN(20))
				}
			}
			f.choices = append(f.choices, it)
		}
		f.choices[0].Contexts[1] = randomTokens(rng, 18, 32)
		f.choices[1].Contexts[2] = randomTokens(rng, 5, 32)
		f.choices[1].Continuations[2] = randomTokens(rng, 16, 32)
		for i := 0; i < 6; i++ {
			f.lastWord = append(f.lastWord, backend.LastWordItem{Context: randomTokens(rng, 2+rng.IntN(8), 32), Continuation: randomTokens(rng, 1+rng.IntN(3), 32)})
		}
		return f, nil
	}
	if student, err = build("tiny", tinyConfig(false, 16, layers), 1); err != nil {
		return
	}
	if tiedStudent, err = build("tiny-tied", tinyConfig(true, 16, layers), 2); err != nil {
		return
	}
	tl := []ir.LayerConfig{{Heads: 4, KVHeads: 4, HeadDim: 6, MLP: 40}, {Heads: 4, KVHeads: 2, HeadDim: 6, MLP: 40}, {Heads: 2, KVHeads: 1, HeadDim: 6, MLP: 20}}
	teacher, err = build("tiny-teacher", tinyConfig(false, 24, tl), 3)
	return
}

// storiesFixture converts stories260K to a Hugging Face directory and
// tokenizes TinyStories paragraphs into rows of seqLen tokens.
func storiesFixture(root, dataDir string, nRows, seqLen int) (*fixture, error) {
	mdir := filepath.Join(dataDir, "models", "stories260K")
	m, err := llama2c.Load(filepath.Join(mdir, "stories260K.bin"))
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadLlama2c(filepath.Join(mdir, "tok512.bin"))
	if err != nil {
		return nil, err
	}
	m.Tokenizer = tok
	text, err := os.Open(filepath.Join(dataDir, "corpora", "tinystories_val.txt"))
	if err != nil {
		return nil, err
	}
	defer text.Close()
	var rows [][]int
	var stream []int
	sc := bufio.NewScanner(text)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() && len(rows) < 2*nRows {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		stream = append(stream, tok.Encode(line, true, false)...)
		for len(stream) >= seqLen && len(rows) < 2*nRows {
			rows = append(rows, stream[:seqLen])
			stream = stream[seqLen:]
		}
	}
	if len(rows) < 2*nRows {
		return nil, fmt.Errorf("tinystories_val.txt gave only %d rows of %d tokens", len(rows), seqLen)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	f, err := newFixture(root, "stories260K", m, tok, rows[:nRows], rows[nRows:], rng)
	if err != nil {
		return nil, err
	}
	f.m.Tokenizer = tok
	f.shared = dataDir
	pair := func(ctx, cont string) ([]int, []int) {
		full := tok.Encode(ctx+cont, true, false)
		c := tok.Encode(ctx, true, false)
		p := 0
		for p < len(c) && p < len(full)-1 && c[p] == full[p] {
			p++
		}
		return full[:p], full[p:]
	}
	choice := func(gold int, ctx string, conts ...string) backend.ChoiceItem {
		it := backend.ChoiceItem{Gold: gold}
		for _, c := range conts {
			x, y := pair(ctx, c)
			it.Contexts = append(it.Contexts, x)
			it.Continuations = append(it.Continuations, y)
			// The choice without its " " delimiter, counted as Python's len.
			it.ContinuationChars = append(it.ContinuationChars, utf8.RuneCountInString(strings.TrimPrefix(c, " ")))
		}
		return it
	}
	f.choices = []backend.ChoiceItem{
		choice(0, "Lily went to the park to play with her", " ball.", " refrigerator theorem."),
		choice(0, "Once upon a time, there was a", " little girl", " purple volcano", " big dog"),
		choice(1, "The cat sat on the", " moonlight sonata", " mat", " red"),
	}
	for _, p := range [][2]string{
		{"Once upon a time, there was a little girl named", " Lily"},
		{"The sun was shining and the birds were", " singing"},
		{"One day, Tom went to the", " park"},
	} {
		x, y := pair(p[0], p[1])
		f.lastWord = append(f.lastWord, backend.LastWordItem{Context: x, Continuation: y})
	}
	return f, nil
}
