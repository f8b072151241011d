package upcycle

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
)

// Every expert is a copy of the dense MLP and Mixtral renormalizes the
// top-k weights to sum to one, so the upcycled model computes the dense
// model's logits whatever the router holds: the float64 reference decoder
// runs both (the dense MLP on one side, the routed experts on the other).
func TestUpcycledEqualsDense(t *testing.T) {
	tokens := []int{1, 5, 9, 2, 30, 7, 7, 11, 3, 36, 0, 4}
	for _, tc := range []struct {
		family string
		o      Options
	}{
		{"llama", Options{Experts: 4, TopK: 2}},
		{"llama", Options{Experts: 4, TopK: 2, Noise: 0.5, Seed: 3}},
		{"mistral", Options{Experts: 3, TopK: 1, Noise: 0.1, Seed: 1}},
		{"mistral", Options{Experts: 2, TopK: 2, Noise: 0.01}},
	} {
		c := irtest.Families()[tc.family]
		m := irtest.RandomModel(t, c, rand.New(rand.NewPCG(7, 11)))
		up, err := Upcycle(m, tc.o)
		if err != nil {
			t.Fatalf("%s %+v: %v", tc.family, tc.o, err)
		}
		if up.Config.Arch != "mixtral" || up.Config.ExpertsPerToken != tc.o.TopK || up.Config.Layers[0].Experts != tc.o.Experts {
			t.Errorf("%s %+v: config %+v", tc.family, tc.o, up.Config)
		}
		want := forward(t, m, tokens)
		got := forward(t, up, tokens)
		var worst float64
		for i := range want {
			for j := range want[i] {
				worst = math.Max(worst, math.Abs(got[i][j]-want[i][j]))
			}
		}
		if !(worst <= 1e-9) {
			t.Errorf("%s %+v: upcycled and dense logits differ by %.3g", tc.family, tc.o, worst)
		}
		// The router is what the seed and noise ask for: zero without
		// noise, and its standard deviation near the noise otherwise.
		r, err := up.Tensor(up.Config.LayerTensors(0).Router)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := r.Float32()
		var ss float64
		for _, x := range v {
			ss += float64(x) * float64(x)
		}
		if sd := math.Sqrt(ss / float64(len(v))); math.Abs(sd-tc.o.Noise) > 0.35*tc.o.Noise+1e-12 {
			t.Errorf("%s %+v: router sd %.4g, want about %g", tc.family, tc.o, sd, tc.o.Noise)
		}
	}
}

func forward(t *testing.T, m *ir.Model, tokens []int) [][]float64 {
	t.Helper()
	d, err := decoder64.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	return d.Forward(tokens, nil, nil)
}

// Families Mixtral cannot hold, MoE models, and bad options are refused.
func TestUpcycleRefuses(t *testing.T) {
	fams := irtest.Families()
	moe := irtest.MoEFamilies()["mixtral"]
	for _, tc := range []struct {
		cfg  ir.Config
		o    Options
		want string
	}{
		{fams["qwen2"], Options{Experts: 4, TopK: 2}, "family"},
		{fams["gemma2"], Options{Experts: 4, TopK: 2}, "family"},
		{moe, Options{Experts: 4, TopK: 2}, "family"},
		{fams["llama"], Options{Experts: 2, TopK: 3}, "num_experts_per_tok"},
	} {
		_, err := MoEConfig(tc.cfg, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: error %v, want one about %q", tc.cfg.Arch, tc.o, err, tc.want)
		}
	}
}
