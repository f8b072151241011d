package decoder64

import (
	"math"
	"testing"

	"github.com/whittle-ml/whittle/internal/shareddata"
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// TestMatchesReference compares the logits with the float32 reference
// forward pass (llama2.c's run.c, written independently) on stories260K.
func TestMatchesReference(t *testing.T) {
	m, err := modelio.Load(shareddata.Path(t, "models/stories260K/stories260K.bin"), modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ref, err := reference.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Load(m)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []int{1, 403, 407, 261, 378, 306, 334, 286, 297, 268, 400, 382, 270, 264, 412, 259}
	acts := make([]LayerActs, len(m.Config.Layers))
	got := d.Forward(tokens, nil, acts)
	s := ref.NewSession(len(tokens))
	for p, id := range tokens {
		want, err := s.Forward(id)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if diff := math.Abs(got[p][i] - float64(w)); diff > 1e-4*math.Max(1, math.Abs(float64(w))) {
				t.Fatalf("position %d logit %d: %g, reference %g", p, i, got[p][i], w)
			}
		}
	}
	// Recorded activations chain: a layer's output is the next one's input.
	for l := 1; l < len(acts); l++ {
		for p := range tokens {
			for i, v := range acts[l].In[p] {
				if v != acts[l-1].Out[p][i] {
					t.Fatalf("layer %d position %d: input %d is %g, the previous output %g", l, p, i, v, acts[l-1].Out[p][i])
				}
			}
		}
	}
	// Skipping every layer leaves the classifier of the normed embedding.
	skip := map[int]bool{}
	for l := range m.Config.Layers {
		skip[l] = true
	}
	c := d.Clone()
	c.Config.Layers = nil // the same, computed without any layer
	bare := c.Forward(tokens, nil, nil)
	for p, z := range d.Forward(tokens, skip, nil) {
		for i := range z {
			if z[i] != bare[p][i] {
				t.Fatalf("position %d logit %d: %g with every layer skipped, %g without layers", p, i, z[i], bare[p][i])
			}
		}
	}
}
