package passes

import (
	"slices"
	"testing"
)

func TestRegistry(t *testing.T) {
	reg, err := Registry()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"correct", "distill", "eval", "export", "init", "instruction-tune", "prune-depth", "prune-width", "score", "search", "upcycle"}
	if got := reg.Kinds(); !slices.Equal(got, want) {
		t.Errorf("kinds %v, want %v", got, want)
	}
	for _, k := range want {
		p, _ := reg.Lookup(k)
		if p.Spec().Description == "" {
			t.Errorf("%s has no description", k)
		}
	}
}
