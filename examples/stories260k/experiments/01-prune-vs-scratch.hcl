# Finding 1: pruning + distillation vs the same student architecture
# trained from random initialization on the same token budget.
#
# The corrected teacher (stories260K fine-tuned on tiny-shakespeare, as in
# ../minitron.hcl) is width-pruned to hidden 48, MLP 128 (163,344
# parameters). The same architecture is also drawn at random (`init`) and
# trained on the same tokens with next-token cross-entropy, and with the
# same distillation loss as the pruned student. A fourth run trains the
# random student for 4× the tokens, to see how far that budget gets it.
# Every training run evaluates on the held-out split every 50 steps (the
# 4× run every 200), so the curves give tokens-to-loss.
#
# The same pair (pruned + distilled vs random init + cross-entropy) is
# then repeated in the teacher's own domain: the original teacher,
# pruned by TinyStories importance and distilled on held-out TinyStories
# text for 200 steps, where the teacher knows far more than the data the
# student sees (the paper's regime).
#
# Run: whittle run examples/stories260k/experiments/01-prune-vs-scratch.hcl --out runs/experiments/01-prune-vs-scratch

variable "data" {
  type        = string
  default     = "../../../../shared/data"
  description = "Directory holding the shared models, corpora and tasks."
}

variable "seed" {
  type    = number
  default = 1
}

variable "tokens" {
  type        = number
  default     = 819200
  description = "Training tokens of every shakespeare student: 400 steps of 16 × 128."
}

variable "tokens_in_domain" {
  type        = number
  default     = 409600
  description = "Training tokens of every TinyStories student: 200 steps of 16 × 128."
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
  batch   = 16
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "shakespeare" {
  path                = "${var.data}/corpora/tinyshakespeare.txt"
  validation_fraction = 0.05
  seed                = var.seed
}

dataset "tinystories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.1
  seed                = var.seed
}

pass "correct" {
  name    = "teacher-correction"
  model   = model.teacher
  dataset = dataset.shakespeare
  into    = "corrected"
  steps   = 150
  batch   = local.batch
  seq_len = local.seq_len
  lr      = 2e-3
  min_lr  = 2e-4
  warmup  = 10
  seed    = var.seed
}

pass "score" {
  name    = "score"
  model   = model.corrected
  dataset = dataset.shakespeare
  into    = "importance"
  samples = 256
  seq_len = local.seq_len
  seed    = var.seed
}

pass "prune-width" {
  name   = "prune-width"
  model  = model.corrected
  scores = scores.importance
  into   = "pruned"
  hidden = 48
  mlp    = 128
}

# The same architecture with random weights: N(0, 0.02²), norms 1.
pass "init" {
  model = model.pruned
  into  = "scratch"
  seed  = var.seed
  std   = 0.02
}

pass "distill" {
  name       = "pruned-kd"
  student    = model.pruned
  teacher    = model.corrected
  dataset    = dataset.shakespeare
  into       = "pruned_kd"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}

pass "correct" {
  name       = "scratch-ce"
  model      = model.scratch
  dataset    = dataset.shakespeare
  into       = "scratch_ce"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}

pass "distill" {
  name       = "scratch-kd"
  student    = model.scratch
  teacher    = model.corrected
  dataset    = dataset.shakespeare
  into       = "scratch_kd"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}

pass "correct" {
  name       = "scratch-ce-4x"
  model      = model.scratch
  dataset    = dataset.shakespeare
  into       = "scratch_ce_4x"
  tokens     = 4 * var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 200
}

# In domain: the original teacher on TinyStories. The random student is
# the same draw as above (same architecture and seed).
pass "score" {
  name    = "ts-score"
  model   = model.teacher
  dataset = dataset.tinystories
  into    = "ts_importance"
  samples = 256
  seq_len = local.seq_len
  seed    = var.seed
}

pass "prune-width" {
  name   = "ts-prune-width"
  model  = model.teacher
  scores = scores.ts_importance
  into   = "ts_pruned"
  hidden = 48
  mlp    = 128
}

pass "distill" {
  name       = "ts-pruned-kd"
  student    = model.ts_pruned
  teacher    = model.teacher
  dataset    = dataset.tinystories
  into       = "ts_pruned_kd"
  tokens     = var.tokens_in_domain
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}

pass "correct" {
  name       = "ts-scratch-ce"
  model      = model.scratch
  dataset    = dataset.tinystories
  into       = "ts_scratch_ce"
  tokens     = var.tokens_in_domain
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}
