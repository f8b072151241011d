package upcycle

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/internal/decoder64"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/irtest"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
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

// The pass plans the Mixtral config of the tiny model and refuses bad
// options at their attribute.
func TestPassPlan(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	src := func(attrs string) string {
		return passtest.Inputs + "pass \"upcycle\" {\n  model = model.base\n  into  = \"moe\"\n" + attrs + "}\n"
	}
	plan, err := pipeline.MakePlan(env.MustLoad(t, reg, src("  experts = 3\n  top_k = 1\n")), reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := plan.Stages[1].Config
	if cfg == nil || cfg.Arch != "mixtral" || cfg.ExpertsPerToken != 1 || cfg.Layers[0].Experts != 3 || cfg.Layers[0].ExpertMLP != env.Config.Layers[0].MLP {
		t.Errorf("planned config %+v", cfg)
	}
	for _, tc := range []struct{ attrs, at, want string }{
		{"  experts = 0\n", "0\n", "experts = 0 must be at least 1"},
		{"  experts = 2\n  top_k = 3\n", "3\n", "top_k = 3 must be between 1 and experts = 2"},
		{"  noise = -1\n", "-1", "noise = -1"},
	} {
		s := src(tc.attrs)
		_, err := pipeline.MakePlan(env.MustLoad(t, reg, s), reg)
		if at := passtest.Pos(t, s, tc.at); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
			t.Errorf("%q: plan error %v, want %q at %s", tc.attrs, err, tc.want, at)
		}
	}
}
