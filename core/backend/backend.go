// Package backend defines the boundary between whittle's pipeline and the
// engines that compute: the pure-Go CPU backend, the libtorch backend, and
// any third-party backend plugin.
//
// The interface is coarse-grained because it may cross a process boundary
// (go-plugin): a call is a whole job — collect statistics over a dataset,
// evaluate, train for N steps — not a tensor operation. Models and token
// data travel as files the host writes (Hugging Face directories, .npy
// arrays; see package data), never as tensors through RPC. Everything in a
// request is plain data, so it maps one-to-one onto the gRPC messages.
package backend

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/whittle-ml/whittle/core/bench"
)

// ModelID names a model loaded into a backend.
type ModelID string

// Capabilities a backend may offer (Info.Capabilities).
const (
	CapTrain    = "train"
	CapLoRA     = "lora"
	CapStats    = "stats"
	CapEvaluate = "evaluate"
	CapGenerate = "generate"
	// CapBench: the backend implements Benchmarker.
	CapBench = "bench"
)

// ErrUnsupported is returned (wrapped) for an operation or option a backend
// does not implement.
var ErrUnsupported = errors.New("not supported by this backend")

// Backend is a compute engine. Implementations must be safe for sequential
// use by one pipeline; they need not support concurrent calls.
type Backend interface {
	// Info describes the backend.
	Info(ctx context.Context) (Info, error)
	// Load reads a Hugging Face model directory (config.json +
	// model.safetensors) into the backend.
	Load(ctx context.Context, req LoadRequest) (ModelID, error)
	// Save writes a loaded model as a Hugging Face directory. LoRA adapters
	// are merged into the saved weights.
	Save(ctx context.Context, req SaveRequest) error
	// Release frees a loaded model.
	Release(ctx context.Context, id ModelID) error
	// Stats runs forward passes (no gradients) and returns the Minitron
	// activation statistics and Block Influence.
	Stats(ctx context.Context, req StatsRequest) (*StatsResult, error)
	// Evaluate computes language-model loss (optionally with layers
	// skipped) and multiple-choice or last-word accuracy.
	Evaluate(ctx context.Context, req EvalRequest) (*EvalResult, error)
	// Train runs an optimization loop, reporting progress through events.
	Train(ctx context.Context, req TrainRequest, events func(TrainEvent)) (*TrainResult, error)
	// Generate continues prompts.
	Generate(ctx context.Context, req GenerateRequest) (*GenerateResult, error)
	// Close releases every model and the backend's resources.
	Close() error
}

// Benchmarker is a backend that can time its engine on the PyTorch
// peer's workloads with random weights (`whittle bench --backend`). It is
// optional: a backend offering it lists CapBench in its capabilities.
type Benchmarker interface {
	Bench(ctx context.Context, req bench.Request) (*bench.Result, error)
}

// Info describes a backend.
type Info struct {
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Device       string   `json:"device"` // "cpu", "cuda:0"
	Threads      int      `json:"threads,omitempty"`
	Capabilities []string `json:"capabilities"`
}

// Has reports whether the backend offers a capability.
func (i Info) Has(capability string) bool {
	for _, c := range i.Capabilities {
		if c == capability {
			return true
		}
	}
	return false
}

// LoadRequest loads a model.
type LoadRequest struct {
	// Dir is a Hugging Face model directory.
	Dir string `json:"dir"`
	// Trainable keeps float32 master weights ready for Train; a model only
	// used as a teacher or for evaluation may be held more cheaply (bf16 on
	// GPUs).
	Trainable bool `json:"trainable"`
}

// SaveRequest saves a model.
type SaveRequest struct {
	Model ModelID `json:"model"`
	Dir   string  `json:"dir"`
	// DType is "f32", "f16" or "bf16"; "" means f32.
	DType string `json:"dtype,omitempty"`
}

// Sequences is a token dataset on disk: an .npy int32 array [N, L] of N
// sequences of L tokens. A sequence's position j (j ≥ 1) is a prediction
// target given positions < j. MaskPath, when set, is an .npy uint8 [N, L]
// array whose 1s mark the positions that count as targets (SFT masks the
// prompt; padding is masked too); without it every position j ≥ 1 counts.
type Sequences struct {
	Path     string `json:"path"`
	MaskPath string `json:"mask_path,omitempty"`
	// Limit uses only the first Limit sequences (0 = all).
	Limit int `json:"limit,omitempty"`
}

// StatsRequest asks for importance statistics.
type StatsRequest struct {
	Model ModelID   `json:"model"`
	Data  Sequences `json:"data"`
	// BatchSize is the number of sequences per forward pass (0 = the
	// backend's default); the Minitron aggregation is per sequence, so it
	// does not change the result. Every position of every sequence counts:
	// Data.MaskPath marks targets, not inputs, and is not used.
	BatchSize int `json:"batch_size"`
	// Activations collects MLP-neuron, attention-head and hidden-channel
	// scores; BlockInfluence the per-layer 1 − cos(x_in, x_out).
	Activations    bool `json:"activations"`
	BlockInfluence bool `json:"block_influence"`
}

// StatsResult holds raw statistics, aggregated as minitron.md defines:
// for an activation a[b,s,d], score[d] = sqrt(Σ_b ((1/S) Σ_s |a[b,s,d]|)²).
type StatsResult struct {
	// MLP[l][j]: neuron j of layer l (input of down_proj).
	MLP [][]float64 `json:"mlp,omitempty"`
	// HeadChannels[l][c]: channel c of the input of o_proj (heads × head_dim).
	HeadChannels [][]float64 `json:"head_channels,omitempty"`
	// Heads[l][h] = ‖HeadChannels[l][h·hd:(h+1)·hd]‖₂.
	Heads [][]float64 `json:"heads,omitempty"`
	// Hidden[d] = Σ_n score_n[d] over the outputs n of every block-input
	// norm (input_layernorm and post_attention_layernorm of every layer),
	// each norm's score aggregated as above (square root included) before
	// the sum.
	Hidden []float64 `json:"hidden,omitempty"`
	// BlockInfluence[l] = 1 − mean over tokens of cos(x_in, x_out) of layer l.
	BlockInfluence []float64 `json:"block_influence,omitempty"`
	Sequences      int       `json:"sequences"`
	Tokens         int       `json:"tokens"`

	// Mixture-of-experts layers (entries of dense layers are nil; all nil
	// for a dense model). In a MoE layer MLP[l] is nil.
	//
	// ExpertMLP[l][e][j]: neuron j of routed expert e (the input of its
	// down projection), aggregated as MLP is over the tokens routed to e
	// (a sequence's mean runs over its tokens routed to e).
	ExpertMLP [][][]float64 `json:"expert_mlp,omitempty"`
	// ExpertProb[l][e]: Σ over tokens of e's router probability (softmax
	// over all experts, before top-k): the routed probability mass.
	ExpertProb [][]float64 `json:"expert_prob,omitempty"`
	// ExpertOutput[l][e]: Σ over the tokens routed to e of ‖w·expert_e(x)‖₂,
	// the magnitude of e's weighted contribution to the layer's output
	// (w its routing weight after top-k and any renormalization).
	ExpertOutput [][]float64 `json:"expert_output,omitempty"`
	// ExpertTokens[l][e]: how many tokens were routed to e.
	ExpertTokens [][]int `json:"expert_tokens,omitempty"`
	// SharedMLP[l][j]: neuron j of the shared expert, aggregated as MLP.
	SharedMLP [][]float64 `json:"shared_mlp,omitempty"`
}

// EvalRequest asks for one or more evaluations of a model.
type EvalRequest struct {
	Model ModelID `json:"model"`
	// LM scores next-token loss on these sequences.
	LM *Sequences `json:"lm,omitempty"`
	// SkipLayers, when set, repeats the LM evaluation once per entry with
	// those layers bypassed (the residual stream passes through), for
	// depth-importance sweeps. EvalResult.Skipped follows its order.
	SkipLayers [][]int `json:"skip_layers,omitempty"`
	// Choices scores multiple-choice items by continuation log-likelihood,
	// with each entry of SkipLayers too when both are set.
	Choices []ChoiceItem `json:"choices,omitempty"`
	// LastWord scores greedy reproduction of a continuation (LAMBADA); it
	// is not repeated for SkipLayers.
	LastWord []LastWordItem `json:"last_word,omitempty"`
	// BatchSize is the number of sequences per forward pass (0 = the
	// backend's default).
	BatchSize int `json:"batch_size,omitempty"`
}

// ChoiceItem is one multiple-choice question, already tokenized: option i
// is Contexts[i] followed by Continuations[i], and only the continuation's
// tokens are scored. Contexts must not be empty (they start with BOS).
// An option longer than the model's context is cut on the left as
// lm-evaluation-harness does: the last MaxSeq+1 tokens are kept and the
// model reads all but the last, so the continuation (at most MaxSeq
// tokens) is scored whole.
type ChoiceItem struct {
	Contexts      [][]int `json:"contexts"`
	Continuations [][]int `json:"continuations"`
	Gold          int     `json:"gold"`
	// ContinuationChars[i] is the length in characters (Unicode code
	// points) of option i's continuation text without the delimiter,
	// lm-evaluation-harness's acc_norm divisor. Nil: each option's token
	// count stands in, and AccuracyNorm equals AccuracyNormTokens.
	ContinuationChars []int `json:"continuation_chars,omitempty"`
}

// LastWordItem is a context and the continuation greedy decoding must
// reproduce exactly.
type LastWordItem struct {
	Context      []int `json:"context"`
	Continuation []int `json:"continuation"`
}

// LMResult is a language-model evaluation.
type LMResult struct {
	// Loss is the mean NLL in nats per scored token.
	Loss   float64 `json:"loss"`
	Tokens int     `json:"tokens"`
}

// ChoiceResult is a multiple-choice evaluation; ties go to the first
// option.
type ChoiceResult struct {
	// Accuracy picks the option with the lowest summed continuation NLL
	// (lm-evaluation-harness's acc); AccuracyNorm the lowest NLL per
	// character of the continuation (its acc_norm, see
	// ChoiceItem.ContinuationChars); AccuracyNormTokens the lowest NLL per
	// continuation token.
	Accuracy           float64 `json:"accuracy"`
	AccuracyNorm       float64 `json:"accuracy_norm"`
	AccuracyNormTokens float64 `json:"accuracy_norm_tokens"`
	Items              int     `json:"items"`
	// Predictions[i] is the chosen option of item i (summed NLL).
	Predictions []int `json:"predictions"`
}

// LastWordResult is a LAMBADA-style evaluation.
type LastWordResult struct {
	Accuracy float64 `json:"accuracy"`
	// Loss is the mean NLL per continuation token.
	Loss  float64 `json:"loss"`
	Items int     `json:"items"`
}

// EvalResult answers an EvalRequest.
type EvalResult struct {
	LM       *LMResult       `json:"lm,omitempty"`
	Choices  *ChoiceResult   `json:"choices,omitempty"`
	LastWord *LastWordResult `json:"last_word,omitempty"`
	// Skipped[i] is the evaluation with SkipLayers[i] bypassed.
	Skipped []SkippedResult `json:"skipped,omitempty"`
}

// SkippedResult is one entry of a layer-removal sweep.
type SkippedResult struct {
	Layers  []int         `json:"layers"`
	LM      *LMResult     `json:"lm,omitempty"`
	Choices *ChoiceResult `json:"choices,omitempty"`
}

// Objectives for TrainRequest.Objective.
const (
	// ObjectiveCE is next-token cross-entropy on the data (with the mask
	// for SFT).
	ObjectiveCE = "ce"
	// ObjectiveKL is forward KL from Teacher to the model, optionally mixed
	// with cross-entropy (Loss.CEWeight).
	ObjectiveKL = "kl"
)

// Training modes (TrainRequest.Mode; "" means ModeFull). Norm-only trains
// only the RMSNorm weights; LoRA trains adapters (LoRAConfig) that are
// merged into the weights when training ends.
const (
	ModeFull     = "full"
	ModeLoRA     = "lora"
	ModeNormOnly = "norm-only"
)

// LossConfig tunes the objective.
type LossConfig struct {
	// Temperature divides both models' logits for KL (default 1).
	Temperature float64 `json:"temperature,omitempty"`
	// ScaleT2 multiplies the KL term by T².
	ScaleT2 bool `json:"scale_t2,omitempty"`
	// TopK, when > 0, keeps only the teacher's top-k logits, renormalized
	// over those ids.
	TopK int `json:"top_k,omitempty"`
	// CEWeight mixes in next-token cross-entropy: (1−w)·KL + w·CE.
	CEWeight float64 `json:"ce_weight,omitempty"`
	// RouterAuxWeight, for either objective, adds that weight times the
	// routers' load-balancing loss of a mixture-of-experts model, as
	// Hugging Face's Mixtral and Qwen-MoE add router_aux_loss_coef times
	// load_balancing_loss_func: over the rows of all MoE layers
	// concatenated (every token of the batch, scored or not),
	// num_experts · Σ_e f_e·P_e with f_e the fraction of rows routed to
	// expert e (summed over the top-k slots) and P_e its mean router
	// probability; f_e is not differentiated. Layers with different
	// expert counts (after non-uniform pruning) are concatenated per
	// count and their losses added. No effect on a dense model.
	RouterAuxWeight float64 `json:"router_aux_weight,omitempty"`
}

// LoRAConfig describes low-rank adapters (Mode = lora): an adapted matrix
// W acts as W + (Alpha/Rank)·B·A; A starts random (seeded by
// TrainRequest.Seed), B at zero, and only A and B train. Zero values take
// the defaults: Rank 8 and Alpha = Rank (PEFT's), and every matrix of
// LoRATargets, as recipes do.
type LoRAConfig struct {
	Rank  int     `json:"rank"`
	Alpha float64 `json:"alpha"`
	// Targets are per-layer roles ("q_proj", "k_proj", "v_proj", "o_proj",
	// "gate_proj", "up_proj", "down_proj").
	Targets []string `json:"targets"`
}

// OptimConfig is AdamW with linear warm-up and cosine decay: the learning
// rate rises linearly over WarmupSteps to LR, then follows a cosine down to
// MinLR at the last step. Zero Beta1, Beta2 and Eps take PyTorch's defaults
// (0.9, 0.999, 1e-8); zero WeightDecay means none. Weight decay applies to
// matrices (and LoRA adapters), not to norm weights.
type OptimConfig struct {
	LR          float64 `json:"lr"`
	MinLR       float64 `json:"min_lr"`
	WarmupSteps int     `json:"warmup_steps"`
	WeightDecay float64 `json:"weight_decay"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	// GradClip is the global gradient-norm limit (0 = none).
	GradClip float64 `json:"grad_clip"`
}

// TrainRequest runs Steps optimizer steps; Resolve holds the rules and
// defaults every backend applies to it. Each step consumes BatchSize ×
// GradAccum sequences from Data in order (wrapping around); the order is
// fixed by the host, so a run is reproducible. GradAccum 0 means 1. The
// loss of a step is the mean of its micro-batches' losses, each a mean
// over its scored tokens.
type TrainRequest struct {
	Model ModelID `json:"model"`
	// Teacher is required for ObjectiveKL; with ObjectiveCE it is optional
	// and only measured against (ValKL). It must be another ModelID than
	// Model (load the same directory twice to distill from a copy).
	Teacher   ModelID     `json:"teacher,omitempty"`
	Objective string      `json:"objective"`
	Loss      LossConfig  `json:"loss"`
	Mode      string      `json:"mode"`
	LoRA      *LoRAConfig `json:"lora,omitempty"`
	Optim     OptimConfig `json:"optim"`
	Data      Sequences   `json:"data"`
	Steps     int         `json:"steps"`
	BatchSize int         `json:"batch_size"`
	GradAccum int         `json:"grad_accum"`
	Seed      int64       `json:"seed"`
	// Validation, when set, is evaluated (LM loss, and KL to the teacher
	// for distillation) every EvalEvery steps and at the end.
	Validation *Sequences `json:"validation,omitempty"`
	EvalEvery  int        `json:"eval_every,omitempty"`
	// CheckpointDir, when set, receives a resumable checkpoint (weights and
	// optimizer state) every CheckpointEvery steps; a Train call that finds
	// one there for the same request resumes from it.
	CheckpointDir   string `json:"checkpoint_dir,omitempty"`
	CheckpointEvery int    `json:"checkpoint_every,omitempty"`
}

// TrainEvent reports progress after each optimizer step.
type TrainEvent struct {
	// Step counts the steps done (1 after the first), of Steps.
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Loss is the step's objective, LR its learning rate and GradNorm the
	// global gradient norm before clipping.
	Loss     float64 `json:"loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	// Tokens counts the sequence tokens consumed so far (padding and
	// masked positions included).
	Tokens int64 `json:"tokens"`
	// ValLoss (and ValKL when there is a teacher) are set on evaluation
	// steps: the mean next-token NLL on Validation, and the mean forward
	// KL(teacher ‖ model) per scored token at temperature 1 over the full
	// vocabulary, whatever the training loss's temperature and top-k.
	ValLoss *float64 `json:"val_loss,omitempty"`
	ValKL   *float64 `json:"val_kl,omitempty"`
}

// TrainResult summarizes a training run.
type TrainResult struct {
	Steps       int          `json:"steps"`
	Tokens      int64        `json:"tokens"`
	FinalLoss   float64      `json:"final_loss"`
	ValLoss     *float64     `json:"val_loss,omitempty"`
	ValKL       *float64     `json:"val_kl,omitempty"`
	History     []TrainEvent `json:"history"`
	TokensPerS  float64      `json:"tokens_per_s"`
	ResumedFrom int          `json:"resumed_from,omitempty"`
}

// GenerateRequest continues token prompts. MaxTokens ≤ 0 generates as
// many tokens as the model's context allows. Temperature 0 is greedy
// decoding; TopP is the nucleus-sampling threshold in (0, 1], where 1 and
// 0 (unset) sample from the whole distribution.
type GenerateRequest struct {
	Model       ModelID `json:"model"`
	Prompts     [][]int `json:"prompts"`
	MaxTokens   int     `json:"max_tokens"`
	Temperature float64 `json:"temperature"`
	TopP        float64 `json:"top_p"`
	Seed        uint64  `json:"seed"`
	// StopToken ends a continuation early and is not included in it (-1 =
	// none; note that 0 is a token id).
	StopToken int `json:"stop_token"`
}

// Check validates the request for a model of vocab tokens and maxSeq
// positions (0: unbounded), so that every backend refuses the same
// requests with the same words.
func (r GenerateRequest) Check(vocab, maxSeq int) error {
	topP := r.TopP
	if topP == 0 {
		topP = 1
	}
	if err := CheckSampling(r.Temperature, topP); err != nil {
		return err
	}
	for i, p := range r.Prompts {
		if len(p) == 0 {
			return fmt.Errorf("prompt %d is empty (it needs at least BOS)", i)
		}
		if maxSeq > 0 && len(p) > maxSeq {
			return fmt.Errorf("prompt %d has %d tokens, the model %d positions", i, len(p), maxSeq)
		}
		for j, id := range p {
			if id < 0 || id >= vocab {
				return fmt.Errorf("prompt %d token %d is %d, outside vocabulary of %d", i, j, id, vocab)
			}
		}
	}
	return nil
}

// CheckSampling reports a temperature that is not a finite non-negative
// number and a top-p threshold outside (0, 1]: the sampling settings
// every generator (backends, `whittle generate`) accepts.
func CheckSampling(temperature, topP float64) error {
	if !(temperature >= 0) || math.IsInf(temperature, 0) {
		return fmt.Errorf("temperature %g must be a finite non-negative number (0 = greedy)", temperature)
	}
	if !(topP > 0 && topP <= 1) {
		return fmt.Errorf("top_p %g must be in (0, 1] (1 = no nucleus cut)", topP)
	}
	return nil
}

// Limit is how many tokens a prompt of n tokens is continued by at most:
// MaxTokens, cut so that prompt and continuation but the last token (never
// fed back) fit in maxSeq positions.
func (r GenerateRequest) Limit(n, maxSeq int) (int, error) {
	limit := r.MaxTokens
	if maxSeq > 0 && (limit <= 0 || limit > maxSeq-n+1) {
		limit = maxSeq - n + 1
	}
	if limit <= 0 {
		return 0, fmt.Errorf("max_tokens %d must be positive for a model without a context length", r.MaxTokens)
	}
	return limit, nil
}

// GenerateResult holds one continuation per prompt (prompt excluded).
type GenerateResult struct {
	Tokens [][]int `json:"tokens"`
}
