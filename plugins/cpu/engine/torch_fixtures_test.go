package engine

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// The fixtures in testdata/torch_*.json come from
// testdata/gen_torch_fixtures.py (PyTorch 1.13, autograd in float64 on
// float32 weights); these tests need no Python.

type torchModelFixture struct {
	Config        ir.Config            `json:"config"`
	Batch         int                  `json:"batch"`
	Seq           int                  `json:"seq"`
	Tokens        []int32              `json:"tokens"`
	Weights       map[string][]float32 `json:"weights"`
	TeacherLogits []float32            `json:"teacher_logits"`
	Logits        []float64            `json:"logits"`
	Cases         []torchCase          `json:"cases"`
}

type torchCase struct {
	Name        string               `json:"name"`
	KLWeight    float64              `json:"kl_weight"`
	Temperature float64              `json:"temperature"`
	ScaleT2     bool                 `json:"scale_t2"`
	TopK        int                  `json:"top_k"`
	IDs         []int32              `json:"ids"`
	Weights     []float32            `json:"weights"`
	Teacher     bool                 `json:"teacher"`
	Loss        float64              `json:"loss"`
	CE          float64              `json:"ce"`
	KL          float64              `json:"kl"`
	Grads       map[string][]float64 `json:"grads"`
}

func loadJSON(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
}

// paramsFrom copies named float32 weights into fresh parameters of cfg,
// requiring every tensor to be present with its exact size.
func paramsFrom(t *testing.T, cfg ir.Config, w map[string][]float32) *Params {
	t.Helper()
	p, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != len(p.Tensors()) {
		t.Fatalf("fixture has %d tensors, the config %d", len(w), len(p.Tensors()))
	}
	for _, tn := range p.Tensors() {
		src, ok := w[tn.Name]
		if !ok || len(src) != len(tn.Data) {
			t.Fatalf("fixture tensor %s: %d values, want %d", tn.Name, len(src), len(tn.Data))
		}
		copy(tn.Data, src)
	}
	return p
}

// closeTo compares got to the float64 reference want: every element must lie
// within rel·(|want| + the tensor's RMS). Scaling by the RMS keeps entries
// that cancel to nearly zero from demanding precision float32 sums cannot
// have. It returns the worst error relative to that scale.
func closeTo(t *testing.T, what string, got []float32, want []float64, rel float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var ss float64
	for _, w := range want {
		ss += w * w
	}
	rms := math.Sqrt(ss / float64(len(want)))
	var worst float64
	for i, w := range want {
		scale := math.Abs(w) + rms
		if scale == 0 {
			scale = 1
		}
		e := math.Abs(float64(got[i])-w) / scale
		worst = max(worst, e)
		if !(e <= rel) {
			t.Errorf("%s[%d] = %g, PyTorch %g (error %.2g of scale %.2g)", what, i, got[i], w, e, scale)
			return worst
		}
	}
	return worst
}

func scalarClose(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if !(math.Abs(got-want) <= rel*math.Max(math.Abs(want), 1e-3)) {
		t.Errorf("%s = %.9g, PyTorch %.9g", what, got, want)
	}
}

// rowLogits is a teacher of fixed float32 logits.
type rowLogits struct {
	v    int
	data []float32
}

func (r *rowLogits) Vocab() int { return r.v }

func (r *rowLogits) Logits(r0, r1 int, dst []float32) error {
	copy(dst, r.data[r0*r.v:r1*r.v])
	return nil
}

// TestTorchFixtures compares logits, every objective's value and every
// parameter's gradient with PyTorch on tiny Llamas (GQA, two layers of
// different head counts, head dims and MLP widths; tied and untied; an
// unusual RMSNorm eps and RoPE base in one of them).
func TestTorchFixtures(t *testing.T) {
	for _, name := range []string{"torch_tiny_untied.json", "torch_tiny_tied.json"} {
		t.Run(name, func(t *testing.T) {
			var fx torchModelFixture
			loadJSON(t, name, &fx)
			p := paramsFrom(t, fx.Config, fx.Weights)
			v, n := fx.Config.Vocab, fx.Batch*fx.Seq
			// A loss chunk that does not divide the rows, so chunk edges are
			// exercised.
			e, err := New(p, Options{Threads: 2, LossChunk: 5})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Forward(fx.Tokens, fx.Batch, fx.Seq); err != nil {
				t.Fatal(err)
			}
			logits := make([]float32, n*v)
			if err := e.Logits(0, n, logits); err != nil {
				t.Fatal(err)
			}
			worst := closeTo(t, "logits", logits, fx.Logits, 1e-5)
			t.Logf("logits: worst relative error %.2g", worst)
			teacher := &rowLogits{v: v, data: fx.TeacherLogits}
			for _, c := range fx.Cases {
				obj := Objective{KLWeight: c.KLWeight, Temperature: c.Temperature, ScaleT2: c.ScaleT2, TopK: c.TopK}
				var src LogitSource
				if c.Teacher {
					src = teacher
				}
				e.ZeroGrad()
				if err := e.Forward(fx.Tokens, fx.Batch, fx.Seq); err != nil {
					t.Fatal(err)
				}
				res, err := e.LossGrad(Targets{IDs: c.IDs, Weights: c.Weights}, obj, src, 1)
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				if err := e.Backward(); err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				scalarClose(t, c.Name+" loss", res.Loss, c.Loss, 1e-5)
				if c.IDs != nil {
					scalarClose(t, c.Name+" CE", res.CE, c.CE, 1e-5)
				}
				if c.Teacher {
					scalarClose(t, c.Name+" KL", res.KL, c.KL, 1e-5)
				}
				var worst float64
				for _, g := range e.G.Tensors() {
					want, ok := c.Grads[g.Name]
					if !ok {
						t.Fatalf("%s: fixture lacks the gradient of %s", c.Name, g.Name)
					}
					worst = max(worst, closeTo(t, fmt.Sprintf("%s: grad %s", c.Name, g.Name), g.Data, want, 2e-5))
				}
				t.Logf("%s: loss %.6f, worst gradient error %.2g", c.Name, res.Loss, worst)
			}
		})
	}
}

type torchAdamWFixture struct {
	Config      ir.Config `json:"config"`
	Beta1       float64   `json:"beta1"`
	Beta2       float64   `json:"beta2"`
	Eps         float64   `json:"eps"`
	WeightDecay float64   `json:"weight_decay"`
	Schedule    struct {
		Peak   float64   `json:"peak"`
		Min    float64   `json:"min"`
		Warmup int       `json:"warmup"`
		Total  int       `json:"total"`
		LRs    []float64 `json:"lrs"`
	} `json:"schedule"`
	Weights map[string][]float32 `json:"weights"`
	Steps   []struct {
		LR       float64              `json:"lr"`
		GradNorm float64              `json:"grad_norm"`
		Clip     float64              `json:"clip"`
		Grads    map[string][]float32 `json:"grads"`
		Params   map[string][]float32 `json:"params"`
	} `json:"steps"`
}

// TestTorchAdamW replays torch.optim.AdamW (weight decay on matrices only,
// float32 state) over six steps whose learning rates come from torch's
// LinearLR + CosineAnnealingLR and whose gradients torch's
// clip_grad_norm_ scaled.
func TestTorchAdamW(t *testing.T) {
	var fx torchAdamWFixture
	loadJSON(t, "torch_adamw.json", &fx)
	s := Schedule{Peak: fx.Schedule.Peak, Min: fx.Schedule.Min, Warmup: fx.Schedule.Warmup, Total: fx.Schedule.Total}
	for step, want := range fx.Schedule.LRs {
		if got := s.At(step); math.Abs(got-want) > 1e-12*s.Peak {
			t.Errorf("schedule step %d: %.12g, torch %.12g", step, got, want)
		}
	}
	p := paramsFrom(t, fx.Config, fx.Weights)
	e, err := New(p, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	opt, err := NewAdamW(fx.Beta1, fx.Beta2, fx.Eps, fx.WeightDecay)
	if err != nil {
		t.Fatal(err)
	}
	clipped := 0
	for i, st := range fx.Steps {
		for _, g := range e.G.Tensors() {
			copy(g.Data, st.Grads[g.Name])
		}
		if norm := e.GradNorm(); math.Abs(norm-st.GradNorm) > 1e-6*st.GradNorm {
			t.Errorf("step %d: gradient norm %.9g, torch %.9g", i, norm, st.GradNorm)
		}
		if st.Clip < 1 {
			clipped++
		}
		if err := opt.Step(e, st.LR, st.Clip); err != nil {
			t.Fatal(err)
		}
		for _, tn := range e.P.Tensors() {
			want := st.Params[tn.Name]
			if len(want) != len(tn.Data) {
				t.Fatalf("step %d: fixture %s has %d values, want %d", i, tn.Name, len(want), len(tn.Data))
			}
			for j, w := range want {
				// Parameters move by about lr per step; allow float32
				// rounding of the values and of the update.
				if d := math.Abs(float64(tn.Data[j] - w)); d > 2e-6*math.Abs(float64(w))+1e-4*st.LR {
					t.Fatalf("step %d: %s[%d] = %.9g, torch %.9g", i, tn.Name, j, tn.Data[j], w)
				}
			}
		}
	}
	if clipped == 0 || clipped == len(fx.Steps) {
		t.Errorf("%d of %d steps clipped: the fixture should exercise both", clipped, len(fx.Steps))
	}
}
