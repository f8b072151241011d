package cpu

import (
	"context"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
)

// Benchmarks of whole backend calls on stories260K, in tokens per second:
// go test ./plugins/cpu -run XXX -bench . -benchtime 3x

func benchSetup(b *testing.B) (*Backend, backend.ModelID, string) {
	f := loadStories(b)
	path, _ := f.sequences(b, 16, 256)
	be := newBackend(b)
	return be, load(b, be, f.dir), path
}

func BenchmarkStats(b *testing.B) {
	be, id, path := benchSetup(b)
	for b.Loop() {
		if _, err := be.Stats(context.Background(), backend.StatsRequest{Model: id, Data: backend.Sequences{Path: path}, BatchSize: 8, Activations: true, BlockInfluence: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*16*256)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkEvaluateLM(b *testing.B) {
	be, id, path := benchSetup(b)
	for b.Loop() {
		if _, err := be.Evaluate(context.Background(), backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: path}, BatchSize: 8}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*16*256)/b.Elapsed().Seconds(), "tok/s")
}

func benchTrain(b *testing.B, objective, mode string) {
	be, id, path := benchSetup(b)
	req := backend.TrainRequest{
		Model: id, Objective: objective, Mode: mode, Optim: trainOptim(),
		Data: backend.Sequences{Path: path}, Steps: 2, BatchSize: 8,
	}
	if objective == backend.ObjectiveKL {
		req.Teacher = load(b, be, loadStories(b).dir)
	}
	if mode == backend.ModeLoRA {
		req.LoRA = &backend.LoRAConfig{Rank: 8, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
	}
	for b.Loop() {
		if _, err := be.Train(context.Background(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*2*8*256)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkTrainCE(b *testing.B)   { benchTrain(b, backend.ObjectiveCE, backend.ModeFull) }
func BenchmarkTrainKL(b *testing.B)   { benchTrain(b, backend.ObjectiveKL, backend.ModeFull) }
func BenchmarkTrainLoRA(b *testing.B) { benchTrain(b, backend.ObjectiveCE, backend.ModeLoRA) }
