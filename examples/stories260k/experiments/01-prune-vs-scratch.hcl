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
  description = "Training tokens of every student: 400 steps of 16 × 128."
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
  model   = model.corrected
  dataset = dataset.shakespeare
  into    = "importance"
  samples = 256
  seq_len = local.seq_len
  seed    = var.seed
}

pass "prune-width" {
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
