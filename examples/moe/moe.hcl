# Mixture-of-experts pruning at our scale: the shipped stories260K (a dense
# TinyStories model) is upcycled into a 4-expert, top-2 Mixtral-layout MoE,
# trained briefly on TinyStories with the router's balancing loss so that
# the experts diverge, then pruned 4 → 2 experts by importance (three expert
# rankings) and, as the baseline, at random; every student is distilled from
# the 4-expert model.
#   upcycle → train → score → prune (scored | random) → distill → eval
# Run (one seed): whittle run examples/moe/moe.hcl --out runs/moe/seed1 --var seed=1
# All seeds and the table of README.md: examples/moe/run.sh

variable "data" {
  type        = string
  default     = "../../../shared/data"
  description = "Directory holding the shared models and corpora."
}

variable "seed" {
  type        = number
  default     = 1
  description = "Seeds the router, the data order, the calibration rows and the random experts."
}

variable "train_steps" {
  type    = number
  default = 250
}

variable "distill_steps" {
  type    = number
  default = 100
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
  batch   = 16
  # Every evaluation reads the same validation rows.
  eval_rows = 64
}

model "dense" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "tinystories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.05
  seed                = 1
}

# 1. Upcycle: every expert a copy of its layer's MLP, the router small and
#    random. Renormalized top-2 weights sum to one, so this computes the
#    dense model exactly (eval-upcycled = eval-dense).
pass "upcycle" {
  model   = model.dense
  into    = "moe"
  experts = 4
  top_k   = 2
  noise   = 0.02
  seed    = var.seed
}

pass "eval" {
  name      = "eval-upcycled"
  model     = model.moe
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

# 2. Train the MoE so that its experts specialize; the balancing loss
#    keeps every expert in use.
pass "correct" {
  name              = "train-moe"
  model             = model.moe
  dataset           = dataset.tinystories
  into              = "moe"
  steps             = var.train_steps
  batch             = local.batch
  seq_len           = local.seq_len
  lr                = 1e-3
  min_lr            = 1e-4
  warmup            = 10
  router_aux_weight = 0.01
  seed              = var.seed
}

pass "eval" {
  name      = "eval-moe"
  model     = model.moe
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

# 3. Expert importance (Model Optimizer's rule: mean norm of each expert's
#    weighted output over the tokens routed to it).
pass "score" {
  model   = model.moe
  dataset = dataset.tinystories
  into    = "importance"
  samples = 128
  seq_len = local.seq_len
  seed    = var.seed
}

# The two other expert rankings, for comparison: the output norm summed
# over the tokens (frequency counts) and the routed probability mass.
pass "score" {
  name              = "score-total"
  model             = model.moe
  dataset           = dataset.tinystories
  into              = "importance_total"
  samples           = 128
  seq_len           = local.seq_len
  seed              = var.seed
  expert_importance = "total_output"
}

pass "score" {
  name              = "score-prob"
  model             = model.moe
  dataset           = dataset.tinystories
  into              = "importance_prob"
  samples           = 128
  seq_len           = local.seq_len
  seed              = var.seed
  expert_importance = "prob_mass"
}

# 4. Prune 4 → 2 experts: the two most important by each ranking, or two
#    at random.
pass "prune-width" {
  name    = "prune-scored"
  model   = model.moe
  scores  = scores.importance
  into    = "scored"
  experts = 2
}

pass "prune-width" {
  name      = "prune-random"
  model     = model.moe
  criterion = "random"
  seed      = var.seed
  into      = "random"
  experts   = 2
}

pass "prune-width" {
  name    = "prune-total"
  model   = model.moe
  scores  = scores.importance_total
  into    = "total"
  experts = 2
}

pass "prune-width" {
  name    = "prune-prob"
  model   = model.moe
  scores  = scores.importance_prob
  into    = "prob"
  experts = 2
}

pass "eval" {
  name      = "eval-scored-pruned"
  model     = model.scored
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-random-pruned"
  model     = model.random
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-total-pruned"
  model     = model.total
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-prob-pruned"
  model     = model.prob
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

# 5. Distill each 2-expert student from the 4-expert model.
pass "distill" {
  name              = "distill-scored"
  student           = model.scored
  teacher           = model.moe
  dataset           = dataset.tinystories
  into              = "scored"
  steps             = var.distill_steps
  batch             = local.batch
  seq_len           = local.seq_len
  lr                = 5e-4
  min_lr            = 5e-5
  warmup            = 5
  router_aux_weight = 0.01
  seed              = var.seed
}

pass "distill" {
  name              = "distill-random"
  student           = model.random
  teacher           = model.moe
  dataset           = dataset.tinystories
  into              = "random"
  steps             = var.distill_steps
  batch             = local.batch
  seq_len           = local.seq_len
  lr                = 5e-4
  min_lr            = 5e-5
  warmup            = 5
  router_aux_weight = 0.01
  seed              = var.seed
}

pass "distill" {
  name              = "distill-total"
  student           = model.total
  teacher           = model.moe
  dataset           = dataset.tinystories
  into              = "total"
  steps             = var.distill_steps
  batch             = local.batch
  seq_len           = local.seq_len
  lr                = 5e-4
  min_lr            = 5e-5
  warmup            = 5
  router_aux_weight = 0.01
  seed              = var.seed
}

pass "distill" {
  name              = "distill-prob"
  student           = model.prob
  teacher           = model.moe
  dataset           = dataset.tinystories
  into              = "prob"
  steps             = var.distill_steps
  batch             = local.batch
  seq_len           = local.seq_len
  lr                = 5e-4
  min_lr            = 5e-5
  warmup            = 5
  router_aux_weight = 0.01
  seed              = var.seed
}

pass "eval" {
  name      = "eval-scored-distilled"
  model     = model.scored
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-random-distilled"
  model     = model.random
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-total-distilled"
  model     = model.total
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}

pass "eval" {
  name      = "eval-prob-distilled"
  model     = model.prob
  datasets  = [dataset.tinystories]
  sequences = local.eval_rows
  seq_len   = local.seq_len
}
