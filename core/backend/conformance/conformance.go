// Package conformance is a test suite any implementation of
// backend.Backend runs to show that it computes what whittle's backends
// must: the same LM losses, choices, statistics, gradients, training
// trajectories and generations.
//
// Every check compares the backend with an independent float64
// implementation of the decoder written in this package (golden.go), on a
// tiny random model (two layers of different widths, grouped-query
// attention, tied and untied classifiers, a three-layer teacher) and, when
// ../shared/data is present, on the real stories260K model and TinyStories
// text. Gradients are recovered from one AdamW step (with ε = 1 the
// update −lr·g/(|g|+ε) is inverted exactly) and compared with central
// finite differences of the float64 loss. Multi-step training (schedule,
// clipping, weight decay, accumulation, moments) is compared with a
// reference backend when Options.Reference opens one — the CPU backend for
// other backends — and with the backend's own checkpoint/resume.
//
// A backend's tests call it:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func() (backend.Backend, error) { return mybackend.New(...) }, conformance.Options{
//			Reference: func() (backend.Backend, error) { return cpu.New(cpu.Options{}) },
//		})
//	}
package conformance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/internal/shareddata"
)

// Options tune a Run.
type Options struct {
	// Reference, when set, opens a second backend whose results the one
	// under test must match (multi-step training, sampling); nil runs the
	// golden checks alone.
	Reference func() (backend.Backend, error)
	// DataDir is shared/data; "" looks for shared/data walking up from the
	// working directory. The stories260K cases skip when it is missing.
	DataDir string
	// Tol is the tolerances; the zero value means Float32Tolerances.
	Tol Tolerances
	// NoLoRA skips the LoRA checks (for backends that return
	// backend.ErrUnsupported for mode lora; the suite then checks that
	// they do).
	NoLoRA bool
}

// Tolerances bound the differences a check accepts.
type Tolerances struct {
	// Loss is relative, for LM losses, training losses and KL.
	Loss float64
	// Stats is relative, for activation statistics (per channel, relative
	// to the largest channel of the vector), and absolute for Block
	// Influence.
	Stats float64
	// Grad bounds |g − g_fd| ≤ Grad·max|g_fd| per element of a gradient.
	Grad float64
	// Weights bounds |w − w_ref| ≤ Weights·max|w_ref| per tensor after
	// training with a reference backend.
	Weights float64
	// ExactTokens requires generation with temperature to draw the very
	// tokens the reference does (float32 backends); otherwise only greedy
	// decoding of the golden model is compared.
	ExactTokens bool
}

// Float32Tolerances suit a backend computing in float32: 1e-4 relative
// for losses.
func Float32Tolerances() Tolerances {
	return Tolerances{Loss: 1e-4, Stats: 1e-4, Grad: 2e-3, Weights: 1e-4, ExactTokens: true}
}

// BF16Tolerances suit matrix products in bfloat16 (8 significant bits).
func BF16Tolerances() Tolerances {
	return Tolerances{Loss: 3e-2, Stats: 3e-2, Grad: 0.25, Weights: 3e-2}
}

// suite is one Run's state.
type suite struct {
	t    *testing.T
	tol  Tolerances
	opts Options
	b    backend.Backend
	ref  backend.Backend
	root string
	ctx  context.Context

	tiny, tied, teacher, stories *fixture
	// families holds one model per family (every family option on).
	families []*fixture
	grads    map[string]*gradCase // finite-difference gradients by setting
}

// Run runs the suite against the backend open returns. open is called
// once; the backend is closed at the end.
func Run(t *testing.T, open func() (backend.Backend, error), opts Options) {
	s := &suite{t: t, opts: opts, tol: opts.Tol, ctx: context.Background(), root: t.TempDir()}
	if s.tol == (Tolerances{}) {
		s.tol = Float32Tolerances()
	}
	b, err := open()
	if err != nil {
		t.Fatalf("opening the backend: %v", err)
	}
	s.b = b
	t.Cleanup(func() { b.Close() })
	if opts.Reference != nil {
		if s.ref, err = opts.Reference(); err != nil {
			t.Fatalf("opening the reference backend: %v", err)
		}
		t.Cleanup(func() { s.ref.Close() })
	}
	if s.tiny, s.tied, s.teacher, err = tinyFixtures(s.root); err != nil {
		t.Fatalf("building the tiny models: %v", err)
	}
	if s.families, err = familyFixtures(s.root); err != nil {
		t.Fatalf("building the family models: %v", err)
	}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = shareddata.Find()
	}
	if dataDir != "" {
		if _, err := os.Stat(filepath.Join(dataDir, "models", "stories260K", "stories260K.bin")); err == nil {
			if s.stories, err = storiesFixture(s.root, dataDir, 8, 64); err != nil {
				t.Fatalf("building the stories260K fixture: %v", err)
			}
		}
	}

	t.Run("Info", s.checkInfo)
	t.Run("LoadSave", s.checkLoadSave)
	t.Run("Bench", s.checkBench)
	for _, f := range []*fixture{s.tiny, s.tied, s.stories} {
		name := "stories260K"
		if f != nil {
			name = f.name
		}
		t.Run(name, func(t *testing.T) {
			if f == nil {
				t.Skip("shared/data/models/stories260K not found")
			}
			t.Run("LM", func(t *testing.T) { s.checkLM(t, f) })
			t.Run("SkipLayers", func(t *testing.T) { s.checkSkip(t, f) })
			t.Run("Choices", func(t *testing.T) { s.checkChoices(t, f) })
			t.Run("Stats", func(t *testing.T) { s.checkStats(t, f) })
			t.Run("Generate", func(t *testing.T) { s.checkGenerate(t, f) })
			t.Run("TrainGradCE", func(t *testing.T) { s.checkGradient(t, f, nil, backend.ObjectiveCE, backend.LossConfig{}, true) })
		})
	}
	// Every family's options (biases, q/k norms, Gemma 2's norms, scales,
	// caps and windows, GeGLU) forward, backward, in statistics and in
	// generation.
	for _, f := range s.families {
		t.Run(f.name, func(t *testing.T) {
			t.Run("LM", func(t *testing.T) { s.checkLM(t, f) })
			t.Run("Stats", func(t *testing.T) { s.checkStats(t, f) })
			t.Run("Generate", func(t *testing.T) { s.checkGenerate(t, f) })
			t.Run("TrainGradCE", func(t *testing.T) { s.checkGradient(t, f, nil, backend.ObjectiveCE, backend.LossConfig{}, true) })
			if hasMoE(f.m.Config) {
				// The routers' balancing loss reaches every router weight.
				t.Run("TrainGradRouterAux", func(t *testing.T) {
					s.checkGradient(t, f, nil, backend.ObjectiveCE, backend.LossConfig{RouterAuxWeight: 0.5}, true)
				})
			}
		})
	}
	t.Run("tiny/TrainGradKL", func(t *testing.T) {
		s.checkGradient(t, s.tiny, s.teacher, backend.ObjectiveKL, backend.LossConfig{Temperature: 2, ScaleT2: true, TopK: 5, CEWeight: 0.3}, false)
	})
	t.Run("tiny/TrainGradKLFull", func(t *testing.T) {
		s.checkGradient(t, s.tied, s.teacher, backend.ObjectiveKL, backend.LossConfig{}, true)
	})
	t.Run("tiny/AdamWStep", s.checkAdamWStep)
	t.Run("tiny/NormOnly", s.checkNormOnly)
	t.Run("tiny/Schedule", s.checkSchedule)
	t.Run("tiny/Validation", s.checkValidation)
	t.Run("tiny/Resume", s.checkResume)
	t.Run("tiny/LoRA", s.checkLoRA)
	t.Run("tiny/LoRADefaults", s.checkLoRADefaults)
	t.Run("tiny/TeacherCE", s.checkTeacherCE)
	t.Run("Reference", func(t *testing.T) {
		if s.ref == nil {
			t.Skip("no reference backend")
		}
		for _, f := range []*fixture{s.tiny, s.stories} {
			if f == nil {
				continue
			}
			t.Run(f.name, func(t *testing.T) { s.checkReference(t, f) })
		}
	})
}

// load loads a fixture's model into b.
func (s *suite) load(t *testing.T, b backend.Backend, f *fixture, trainable bool) backend.ModelID {
	t.Helper()
	id, err := b.Load(s.ctx, backend.LoadRequest{Dir: f.dir, Trainable: trainable})
	if err != nil {
		t.Fatalf("loading %s: %v", f.name, err)
	}
	t.Cleanup(func() { b.Release(s.ctx, id) })
	return id
}

// closeRel reports whether got is within tol of want, relative to
// max(|want|, floor).
func closeRel(got, want, tol, floor float64) bool {
	return math.Abs(got-want) <= tol*math.Max(math.Abs(want), floor)
}

func (s *suite) expectLoss(t *testing.T, what string, got, want float64) {
	t.Helper()
	if !closeRel(got, want, s.tol.Loss, 1e-3) || math.IsNaN(got) {
		t.Errorf("%s = %.9g, want %.9g (relative difference %.2g, tolerance %.2g)", what, got, want, math.Abs(got-want)/math.Abs(want), s.tol.Loss)
	}
}

// expectVec compares vectors relative to want's largest magnitude.
func expectVec(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	var scale float64
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	worst, at := 0.0, -1
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > worst || math.IsNaN(got[i]) {
			worst, at = d, i
		}
	}
	if at >= 0 && (worst > tol*scale || math.IsNaN(got[at])) {
		t.Errorf("%s[%d] = %.9g, want %.9g (difference %.3g > %.2g × %.3g)", what, at, got[at], want[at], worst, tol, scale)
	}
}

// unsupported reports whether err says the backend lacks a feature.
func unsupported(err error) bool { return errors.Is(err, backend.ErrUnsupported) }

func fmtLayers(l []int) string { return fmt.Sprint(l) }
