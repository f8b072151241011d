# Finding 6: prune to a budget (issue 13). At two parameter budgets the
# `search` pass picks the student; it is distilled exactly like two
# baselines on the same budget and compared with them:
#   - search: every candidate within 3% below the budget (12 at ≈160K, 8
#     at ≈200K; all of them: top_k covers the list) is pruned from the
#     importance scores, distilled from the teacher for 32,768 tokens (the
#     paper's lightweight retraining) and scored by held-out LM loss; the
#     lowest wins;
#   - hand-picked: the demo's width student, hidden and MLP cut by the same
#     ratio with every head kept (hidden 48, MLP 128 as in ../minitron.hcl
#     at 0.75; hidden 56, MLP 148 at 0.875). Each budget is that student's
#     exact parameter count, so it is one of the search's candidates;
#   - random: one of the same candidates drawn from the seed
#     (pick = "random"); only its loss as pruned is measured, nothing is
#     compared.
# Each student is then distilled for the same 200 steps of 16 × 128 tokens
# (forward KL) and evaluated on held-out TinyStories. In the teacher's own
# domain (the original stories260K, TinyStories validation text split 90/10),
# as in ../../search/stories260k.hcl.
#
# Run: whittle run examples/stories260k/experiments/06-search.hcl --out runs/experiments/06-search

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
  default     = 409600
  description = "Distillation tokens of each student: 200 steps of 16 × 128."
}

variable "retrain_tokens" {
  type        = number
  default     = 32768
  description = "Distillation tokens of each candidate before the search scores it: 16 steps of 16 × 128."
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
  batch   = 16
  grid    = [1, 0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625, 0.5]
  # Budget = the hand-picked student's parameters.
  budgets = {
    "160k" = { params = 163344, hidden = 48, mlp = 128 }
    "200k" = { params = 207368, hidden = 56, mlp = 148 }
  }
  # The arms of each budget: search, random, hand.
  arms = {
    for run in setproduct(keys(local.budgets), ["search", "random", "hand"]) :
    "${run[1]}-${run[0]}" => { budget = run[0], arm = run[1] }
  }
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "tinystories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.1
  seed                = var.seed
}

pass "score" {
  model   = model.teacher
  dataset = dataset.tinystories
  into    = "importance"
  samples = 128
  seq_len = local.seq_len
  layers  = ["lm_loss"]
  seed    = var.seed
}

# The search and the random pick share the space, the budget and the
# candidate list; only how the student is chosen differs.
pass "search" {
  for_each  = { for k, v in local.arms : k => v if v.arm != "hand" }
  name      = each.key
  model     = model.teacher
  scores    = scores.importance
  into      = replace(each.key, "-", "_")
  dataset   = dataset.tinystories
  metric    = "lm_loss"
  top_k     = 20
  pick      = each.value.arm == "random" ? "random" : "best"
  sequences = 64
  seq_len   = local.seq_len
  batch     = local.batch
  seed      = var.seed

  retrain_tokens = each.value.arm == "search" ? var.retrain_tokens : null
  retrain_lr     = each.value.arm == "search" ? 3e-3 : null

  constraints {
    params    = local.budgets[each.value.budget].params
    tolerance = 0.03
  }
  space "hidden" {
    ratios   = local.grid
    round_to = 4
  }
  space "mlp" {
    ratios   = local.grid
    round_to = 4
  }
  space "kv_heads" {
    sizes = [4, 2]
  }
  space "layers" {
    sizes     = [5, 4, 3]
    max_prune = 0.4
  }
}

pass "prune-width" {
  for_each = local.budgets
  name     = "hand-${each.key}"
  model    = model.teacher
  scores   = scores.importance
  into     = "hand_${each.key}"
  hidden   = each.value.hidden
  mlp      = each.value.mlp
}

pass "distill" {
  for_each   = local.arms
  name       = "kd-${each.key}"
  student    = model[replace(each.key, "-", "_")]
  teacher    = model.teacher
  dataset    = dataset.tinystories
  into       = "kd_${replace(each.key, "-", "_")}"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 50
}
