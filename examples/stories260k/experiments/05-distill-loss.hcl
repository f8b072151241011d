# Finding 5: the distillation loss. One width-pruned student (hidden 48,
# MLP 128, as in ../minitron.hcl) is trained on the same tokens with:
# forward KL on the full softmax; next-token cross-entropy on the data
# alone (ce_weight = 1: the teacher is then only used to measure the KL);
# an equal mix; and forward KL over the teacher's top-64 and top-8 logits
# (renormalized). In two settings:
#   - out of domain: the corrected teacher on tiny-shakespeare (400 steps),
#     where the teacher knows little more about the data than the data
#     itself (it saw 307,200 shakespeare tokens during correction);
#   - in domain: the original teacher on held-out TinyStories text (200
#     steps), where it knows far more than the student's budget shows it
#     (its pretraining), the regime of the paper.
#
# Run: whittle run examples/stories260k/experiments/05-distill-loss.hcl --out runs/experiments/05-distill-loss

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
  description = "Training tokens of each shakespeare student: 400 steps of 16 × 128."
}

variable "tokens_in_domain" {
  type        = number
  default     = 409600
  description = "Training tokens of each TinyStories student: 200 steps of 16 × 128."
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
  batch   = 16
  objectives = {
    "kl"       = { into = "kl", ce_weight = 0, top_k = null }
    "ce"       = { into = "ce", ce_weight = 1, top_k = null }
    "mix-0.5"  = { into = "mix_05", ce_weight = 0.5, top_k = null }
    "kl-top64" = { into = "kl_top64", ce_weight = null, top_k = 64 }
    "kl-top8"  = { into = "kl_top8", ce_weight = null, top_k = 8 }
  }
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
  into   = "student"
  hidden = 48
  mlp    = 128
}

# The five objectives, by pass name: ce_weight mixes in next-token
# cross-entropy (0: forward KL alone), top_k cuts the teacher's softmax
# (null: every logit).
pass "distill" {
  for_each   = local.objectives
  name       = each.key
  student    = model.student
  teacher    = model.corrected
  dataset    = dataset.shakespeare
  into       = each.value.into
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 100
  ce_weight  = each.value.ce_weight
  top_k      = each.value.top_k
}

# In domain: the original teacher on TinyStories.
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
  into   = "ts_student"
  hidden = 48
  mlp    = 128
}

pass "distill" {
  for_each   = local.objectives
  name       = "ts-${each.key}"
  student    = model.ts_student
  teacher    = model.teacher
  dataset    = dataset.tinystories
  into       = "ts_${each.value.into}"
  tokens     = var.tokens_in_domain
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
  ce_weight  = each.value.ce_weight
  top_k      = each.value.top_k
}
