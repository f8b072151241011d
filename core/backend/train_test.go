package backend

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

// validTrain is a minimal request every rule accepts.
func validTrain() TrainRequest {
	return TrainRequest{Model: "m", Objective: ObjectiveCE, Optim: OptimConfig{LR: 1e-3}, Steps: 10, BatchSize: 2}
}

func TestTrainResolveRefuses(t *testing.T) {
	for _, c := range []struct {
		edit func(*TrainRequest)
		want string
	}{
		{func(r *TrainRequest) { r.Steps = 0 }, "steps 0"},
		{func(r *TrainRequest) { r.BatchSize = -1 }, "batch_size -1"},
		{func(r *TrainRequest) { r.GradAccum = -2 }, "grad_accum -2"},
		{func(r *TrainRequest) { r.EvalEvery = -1 }, "eval_every -1"},
		{func(r *TrainRequest) { r.CheckpointEvery = -1 }, "checkpoint_every -1"},
		{func(r *TrainRequest) { r.Objective = "mse" }, `unknown objective "mse"`},
		{func(r *TrainRequest) { r.Objective = "" }, `unknown objective ""`},
		{func(r *TrainRequest) { r.Objective = ObjectiveKL }, "kl needs a teacher"},
		{func(r *TrainRequest) { r.Teacher = "m" }, "teacher m is the model being trained"},
		{func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.CEWeight = ObjectiveKL, "t", 1.5 }, "ce_weight 1.5"},
		{func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.CEWeight = ObjectiveKL, "t", math.NaN() }, "ce_weight NaN"},
		{func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.Temperature = ObjectiveKL, "t", -1 }, "temperature -1"},
		{func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.Temperature = ObjectiveKL, "t", math.Inf(1) }, "temperature +Inf"},
		{func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.TopK = ObjectiveKL, "t", -3 }, "top_k -3"},
		{func(r *TrainRequest) { r.Loss.RouterAuxWeight = -0.01 }, "router_aux_weight -0.01"},
		{func(r *TrainRequest) { r.Loss.RouterAuxWeight = math.Inf(1) }, "router_aux_weight +Inf"},
		{func(r *TrainRequest) { r.Optim.LR = 0 }, "learning rate 0"},
		{func(r *TrainRequest) { r.Optim.LR = math.Inf(1) }, "learning rate +Inf"},
		{func(r *TrainRequest) { r.Optim.MinLR = -1 }, "min_lr -1"},
		{func(r *TrainRequest) { r.Optim.WarmupSteps = -1 }, "warmup_steps -1"},
		{func(r *TrainRequest) { r.Optim.GradClip = math.NaN() }, "grad_clip NaN"},
		{func(r *TrainRequest) { r.Optim.WeightDecay = -0.1 }, "weight_decay -0.1"},
		{func(r *TrainRequest) { r.Optim.Beta1 = 1 }, "betas 1, 0"},
		{func(r *TrainRequest) { r.Optim.Beta2 = -0.5 }, "betas 0, -0.5"},
		{func(r *TrainRequest) { r.Optim.Eps = math.NaN() }, "eps NaN"},
		{func(r *TrainRequest) { r.Mode = "partial" }, `unknown mode "partial"`},
		{func(r *TrainRequest) { r.LoRA = &LoRAConfig{Rank: 2} }, "lora settings given"},
		{func(r *TrainRequest) { r.Mode, r.LoRA = ModeLoRA, &LoRAConfig{Rank: -2} }, "negative lora rank"},
		{func(r *TrainRequest) { r.Mode, r.LoRA = ModeLoRA, &LoRAConfig{Targets: []string{"lm_head"}} }, `unknown lora target "lm_head"`},
	} {
		r := validTrain()
		c.edit(&r)
		_, err := r.Resolve()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Resolve(%+v) = %v, want an error with %q", r, err, c.want)
		}
	}
}

func TestTrainResolveDefaults(t *testing.T) {
	all := []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	for _, c := range []struct {
		name string
		edit func(*TrainRequest)
		want func(*ResolvedTrain)
	}{
		{"ce", func(r *TrainRequest) {}, func(w *ResolvedTrain) {}},
		// The drift this resolves: a teacher with objective ce is allowed
		// (measured against, ValKL), and its loss settings are not read.
		{"ce with a teacher", func(r *TrainRequest) { r.Teacher, r.Loss = "t", LossConfig{Temperature: 3, TopK: 4} },
			func(w *ResolvedTrain) { w.Teacher = "t" }},
		{"ce keeps the router balancing weight", func(r *TrainRequest) { r.Loss = LossConfig{TopK: 4, RouterAuxWeight: 0.02} },
			func(w *ResolvedTrain) { w.Loss.RouterAuxWeight = 0.02 }},
		{"kl with the router balancing weight", func(r *TrainRequest) {
			r.Objective, r.Teacher, r.Loss = ObjectiveKL, "t", LossConfig{RouterAuxWeight: 0.01}
		},
			func(w *ResolvedTrain) {
				w.Objective, w.Teacher, w.Loss, w.KLWeight = ObjectiveKL, "t", LossConfig{Temperature: 1, RouterAuxWeight: 0.01}, 1
			}},
		{"kl", func(r *TrainRequest) {
			r.Objective, r.Teacher, r.Loss = ObjectiveKL, "t", LossConfig{CEWeight: 0.25, TopK: 5, ScaleT2: true}
		},
			func(w *ResolvedTrain) {
				w.Objective, w.Teacher, w.Loss = ObjectiveKL, "t", LossConfig{CEWeight: 0.25, TopK: 5, ScaleT2: true, Temperature: 1}
				w.KLWeight = 0.75
			}},
		{"kl at temperature 2", func(r *TrainRequest) { r.Objective, r.Teacher, r.Loss.Temperature = ObjectiveKL, "t", 2 },
			func(w *ResolvedTrain) {
				w.Objective, w.Teacher, w.Loss.Temperature, w.KLWeight = ObjectiveKL, "t", 2, 1
			}},
		{"explicit optimizer", func(r *TrainRequest) { r.Optim = OptimConfig{LR: 1e-3, Beta1: 0.8, Beta2: 0.95, Eps: 1e-6} },
			func(w *ResolvedTrain) { w.Optim.Beta1, w.Optim.Beta2, w.Optim.Eps = 0.8, 0.95, 1e-6 }},
		{"grad_accum", func(r *TrainRequest) { r.GradAccum = 3 }, func(w *ResolvedTrain) { w.GradAccum = 3 }},
		{"norm-only", func(r *TrainRequest) { r.Mode = ModeNormOnly }, func(w *ResolvedTrain) { w.Mode = ModeNormOnly }},
		{"lora defaults", func(r *TrainRequest) { r.Mode = ModeLoRA }, func(w *ResolvedTrain) {
			w.Mode, w.LoRA = ModeLoRA, &LoRAConfig{Rank: 8, Alpha: 8, Targets: all}
			w.Adapters = &ResolvedLoRA{Rank: 8, Alpha: 8, Roles: []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleO, ir.RoleGate, ir.RoleUp, ir.RoleDown}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := validTrain()
			c.edit(&r)
			got, err := r.Resolve()
			if err != nil {
				t.Fatal(err)
			}
			want := ResolvedTrain{TrainRequest: validTrain()}
			want.Mode, want.GradAccum = ModeFull, 1
			want.Optim.Beta1, want.Optim.Beta2, want.Optim.Eps = 0.9, 0.999, 1e-8
			c.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve =\n %+v\nwant\n %+v", got, want)
			}
			again, err := got.TrainRequest.Resolve()
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("resolving twice changed the request: %+v, %v", again, err)
			}
		})
	}
}

func TestTrains(t *testing.T) {
	for _, c := range []struct {
		mode, tensor string
		want         bool
	}{
		{ModeFull, "model.layers.0.mlp.up_proj.weight", true},
		{ModeFull, "model.norm.weight", true},
		{ModeNormOnly, "model.layers.0.input_layernorm.weight", true},
		{ModeNormOnly, "model.layers.0.self_attn.q_proj.weight", false},
		{ModeLoRA, "model.layers.0.self_attn.q_proj.weight", false},
		{ModeLoRA, "model.norm.weight", false},
	} {
		r := validTrain()
		r.Mode = c.mode
		res, err := r.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Trains(c.tensor); got != c.want {
			t.Errorf("mode %s: Trains(%s) = %v, want %v", c.mode, c.tensor, got, c.want)
		}
	}
}

func TestCheckpointKey(t *testing.T) {
	st := CheckpointState{DataShape: [2]int{8, 16}, Weights: "w0", Teacher: "t0", Layout: []string{"weights/100"}}
	key := func(edit func(*TrainRequest), editState func(*CheckpointState)) string {
		t.Helper()
		r := validTrain()
		r.Objective, r.Teacher = ObjectiveKL, "t"
		edit(&r)
		res, err := r.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		s := st
		s.Layout = append([]string(nil), st.Layout...)
		editState(&s)
		k, err := res.CheckpointKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	none := func(*TrainRequest) {}
	noState := func(*CheckpointState) {}
	base := key(none, noState)
	for _, c := range []struct {
		name      string
		edit      func(*TrainRequest)
		editState func(*CheckpointState)
		same      bool
	}{
		{"other model ids", func(r *TrainRequest) { r.Model, r.Teacher = "m2", "t2" }, noState, true},
		{"validation and checkpoint settings", func(r *TrainRequest) {
			r.Validation, r.EvalEvery, r.CheckpointDir, r.CheckpointEvery = &Sequences{Path: "v.npy"}, 5, "/ck", 3
		}, noState, true},
		{"defaults spelled out", func(r *TrainRequest) {
			r.Optim.Beta1, r.Optim.Eps, r.Loss.Temperature, r.GradAccum, r.Mode = 0.9, 1e-8, 1, 1, ModeFull
		}, noState, true},
		{"steps", func(r *TrainRequest) { r.Steps = 11 }, noState, false},
		{"seed", func(r *TrainRequest) { r.Seed = 1 }, noState, false},
		{"learning rate", func(r *TrainRequest) { r.Optim.LR = 2e-3 }, noState, false},
		{"data", func(r *TrainRequest) { r.Data.Path = "other.npy" }, noState, false},
		{"data shape", none, func(s *CheckpointState) { s.DataShape[0] = 9 }, false},
		{"weights", none, func(s *CheckpointState) { s.Weights = "w1" }, false},
		{"teacher weights", none, func(s *CheckpointState) { s.Teacher = "t1" }, false},
		{"layout", none, func(s *CheckpointState) { s.Layout[0] = "weights/101" }, false},
	} {
		if got := key(c.edit, c.editState); (got == base) != c.same {
			t.Errorf("%s: key changed = %v, want %v", c.name, got != base, !c.same)
		}
	}
	// With objective ce the teacher does not shape the weights.
	ce := func(r *TrainRequest) { r.Objective = ObjectiveCE }
	if key(ce, noState) != key(ce, func(s *CheckpointState) { s.Teacher = "t1" }) {
		t.Error("the teacher's weights changed the key of a ce run")
	}
}
