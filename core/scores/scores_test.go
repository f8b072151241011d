package scores

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTopK(t *testing.T) {
	cases := []struct {
		s    []float64
		k    int
		want []int
	}{
		{[]float64{0.1, 0.9, 0.5, 0.7}, 2, []int{1, 3}},
		{[]float64{3, 1, 2}, 3, []int{0, 1, 2}},
		{[]float64{1, 1, 1, 1}, 2, []int{0, 1}}, // ties keep the lower index
		{[]float64{2, 5, 5, 1}, 1, []int{1}},
		{[]float64{1, 2}, 5, []int{0, 1}},
		{[]float64{1, 2}, -1, []int{}},
		{nil, 0, []int{}},
	}
	for _, c := range cases {
		got := TopK(c.s, c.k)
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("TopK(%v, %d) = %v, want %v", c.s, c.k, got, c.want)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scores.json")
	in := &Table{
		Hidden:  []float64{1.5, 0.25},
		Heads:   [][]float64{{1, 2}, {3, 4}},
		MLP:     [][]float64{{0.1, 0.2, 0.3}},
		Layers:  map[string][]float64{"block_influence": {0.5, 0.1}},
		Method:  "activation",
		Samples: 64,
		// A MoE layer 0 (two experts of two neurons, a shared expert)
		// beside a dense layer 1.
		Experts:   [][]float64{{0.7, 0.3}, nil},
		ExpertMLP: [][][]float64{{{1, 2}, {3, 4}}, nil},
		SharedMLP: [][]float64{{5, 6, 7}, nil},
	}
	if err := in.Save(path); err != nil {
		t.Fatal(err)
	}
	out, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the table:\n in %+v\nout %+v", in, out)
	}
}

// A table written before mixture-of-experts support (no expert fields)
// still loads, with the expert fields empty.
func TestLoadTableWithoutExperts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.json")
	old := `{"hidden": [1, 2], "heads": [[1]], "mlp": [[0.5, 0.25]], "method": "activations(samples=8,seq_len=16)", "samples": 8}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Table{Hidden: []float64{1, 2}, Heads: [][]float64{{1}}, MLP: [][]float64{{0.5, 0.25}}, Method: "activations(samples=8,seq_len=16)", Samples: 8}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("old table loaded as %+v, want %+v", got, want)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte(`{"hidden": [1, "x"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !contains(err.Error(), path) {
		t.Errorf("Load(bad) = %v, want an error naming %s", err, path)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
