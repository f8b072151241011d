package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Defaults for zero fields of OptimConfig (PyTorch's AdamW) and
// LossConfig.
const (
	DefaultBeta1         = 0.9
	DefaultBeta2         = 0.999
	DefaultEps           = 1e-8
	DefaultKLTemperature = 1.0
)

// ResolvedTrain is a TrainRequest that passed Resolve, with every default
// applied, so that two requests meaning the same run are equal. Backends
// train from it; the rules live here once so that every backend accepts
// and refuses the same requests with the same words.
type ResolvedTrain struct {
	// TrainRequest has Mode, GradAccum, Optim's Beta1, Beta2 and Eps,
	// Loss.Temperature (kl) and LoRA (mode lora, targets as short names)
	// filled in; Loss holds only RouterAuxWeight for objective ce.
	TrainRequest
	// Adapters are the LoRA settings with IR roles (mode lora only).
	Adapters *ResolvedLoRA
	// KLWeight weighs the KL term against cross-entropy: 1 − CEWeight for
	// objective kl, 0 for ce.
	KLWeight float64
}

// Resolve checks r against the rules every backend applies and returns it
// with its defaults. What depends on the models and data (their presence,
// the teacher's vocabulary, the data's shape) is left to the backend; see
// CheckTeacherVocab.
func (r TrainRequest) Resolve() (ResolvedTrain, error) {
	switch {
	case r.Steps <= 0:
		return ResolvedTrain{}, fmt.Errorf("steps %d must be positive", r.Steps)
	case r.BatchSize <= 0:
		return ResolvedTrain{}, fmt.Errorf("batch_size %d must be positive", r.BatchSize)
	case r.GradAccum < 0:
		return ResolvedTrain{}, fmt.Errorf("negative grad_accum %d", r.GradAccum)
	case r.EvalEvery < 0 || r.CheckpointEvery < 0:
		return ResolvedTrain{}, fmt.Errorf("negative eval_every %d or checkpoint_every %d", r.EvalEvery, r.CheckpointEvery)
	case r.Teacher != "" && r.Teacher == r.Model:
		return ResolvedTrain{}, fmt.Errorf("the teacher %s is the model being trained; load it a second time", r.Teacher)
	}
	if r.GradAccum == 0 {
		r.GradAccum = 1
	}
	if !finiteAtLeast(r.Loss.RouterAuxWeight, 0) {
		return ResolvedTrain{}, fmt.Errorf("router_aux_weight %g must be a finite non-negative number", r.Loss.RouterAuxWeight)
	}
	out := ResolvedTrain{}
	switch r.Objective {
	case ObjectiveCE:
		// A teacher is optional and only measured against (ValKL); of the
		// loss settings only the router balancing weight applies.
		r.Loss = LossConfig{RouterAuxWeight: r.Loss.RouterAuxWeight}
	case ObjectiveKL:
		if r.Teacher == "" {
			return ResolvedTrain{}, fmt.Errorf("objective kl needs a teacher")
		}
		l := &r.Loss
		switch {
		case !(l.CEWeight >= 0 && l.CEWeight <= 1):
			return ResolvedTrain{}, fmt.Errorf("ce_weight %g outside [0, 1]", l.CEWeight)
		case !finiteAtLeast(l.Temperature, 0):
			return ResolvedTrain{}, fmt.Errorf("temperature %g must be a finite positive number (0 = %g)", l.Temperature, DefaultKLTemperature)
		case l.TopK < 0:
			return ResolvedTrain{}, fmt.Errorf("negative top_k %d", l.TopK)
		}
		if l.Temperature == 0 {
			l.Temperature = DefaultKLTemperature
		}
		out.KLWeight = 1 - l.CEWeight
	default:
		return ResolvedTrain{}, fmt.Errorf("unknown objective %q (want %s or %s)", r.Objective, ObjectiveCE, ObjectiveKL)
	}
	if err := r.Optim.resolve(); err != nil {
		return ResolvedTrain{}, err
	}
	if err := r.CheckMode(); err != nil {
		return ResolvedTrain{}, err
	}
	if r.Mode == "" {
		r.Mode = ModeFull
	}
	if r.Mode == ModeLoRA {
		a, err := r.LoRA.Resolve()
		if err != nil {
			return ResolvedTrain{}, err
		}
		out.Adapters = &a
		r.LoRA = a.config()
	}
	out.TrainRequest = r
	return out, nil
}

// resolve checks the optimizer settings and applies their defaults.
func (o *OptimConfig) resolve() error {
	switch {
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return fmt.Errorf("learning rate %g must be a finite positive number", o.LR)
	case !finiteAtLeast(o.MinLR, 0):
		return fmt.Errorf("min_lr %g must be a finite non-negative number", o.MinLR)
	case o.WarmupSteps < 0:
		return fmt.Errorf("negative warmup_steps %d", o.WarmupSteps)
	case !finiteAtLeast(o.GradClip, 0):
		return fmt.Errorf("grad_clip %g must be a finite non-negative number (0 = none)", o.GradClip)
	case !finiteAtLeast(o.WeightDecay, 0):
		return fmt.Errorf("weight_decay %g must be a finite non-negative number", o.WeightDecay)
	case !(o.Beta1 >= 0 && o.Beta1 < 1), !(o.Beta2 >= 0 && o.Beta2 < 1):
		return fmt.Errorf("AdamW betas %g, %g must be in [0, 1) (0 = PyTorch's %g, %g)", o.Beta1, o.Beta2, DefaultBeta1, DefaultBeta2)
	case !finiteAtLeast(o.Eps, 0):
		return fmt.Errorf("AdamW eps %g must be a finite non-negative number (0 = %g)", o.Eps, DefaultEps)
	}
	o.Beta1 = orDefault(o.Beta1, DefaultBeta1)
	o.Beta2 = orDefault(o.Beta2, DefaultBeta2)
	o.Eps = orDefault(o.Eps, DefaultEps)
	return nil
}

func finiteAtLeast(v, lo float64) bool { return v >= lo && !math.IsInf(v, 0) }

func orDefault(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// Trains reports whether the model's tensor (by its Hugging Face name)
// is trained in place: every one in mode full, the RMSNorm weights in mode
// norm-only, none in mode lora (its adapters train instead).
func (r ResolvedTrain) Trains(tensor string) bool {
	switch r.Mode {
	case ModeNormOnly:
		return strings.Contains(tensor, "norm")
	case ModeLoRA:
		return false
	}
	return true
}

// CheckTeacherVocab reports a teacher whose vocabulary is not the model's.
func (r ResolvedTrain) CheckTeacherVocab(model, teacher int) error {
	if model != teacher {
		return fmt.Errorf("teacher %s has a vocabulary of %d, the model %d", r.Teacher, teacher, model)
	}
	return nil
}

// CheckpointState is what, besides the request, a training checkpoint
// must match to be resumed.
type CheckpointState struct {
	// DataShape is Data's rows and columns.
	DataShape [2]int `json:"data_shape"`
	// Weights and Teacher are hashes of the starting weights of the model
	// and of the teacher ("" without one).
	Weights string `json:"weights"`
	Teacher string `json:"teacher,omitempty"`
	// Layout describes the backend's trainable arrays (names or sizes).
	Layout []string `json:"layout"`
}

// CheckpointKey identifies the run a checkpoint belongs to: a hash of the
// resolved request without what does not change the weights (model ids,
// validation and checkpoint settings) and of st, whose teacher counts only
// when it shapes the loss.
func (r ResolvedTrain) CheckpointKey(st CheckpointState) (string, error) {
	req := r.TrainRequest
	req.Model, req.Teacher, req.Validation, req.EvalEvery, req.CheckpointDir, req.CheckpointEvery = "", "", nil, 0, "", 0
	if r.KLWeight == 0 {
		st.Teacher = ""
	}
	data, err := json.Marshal(struct {
		Request TrainRequest    `json:"request"`
		State   CheckpointState `json:"state"`
	}{req, st})
	if err != nil {
		return "", fmt.Errorf("checkpoint identity: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
