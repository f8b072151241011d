# Prune to a budget: the best stories260K student of about 160K parameters
# (of 260,032), found by a search over hidden size, MLP width and depth.
#   score → search (plan lists the candidates; the top_k are pruned, briefly
#   distilled and scored on held-out TinyStories) → distill the winner → eval
# Plan: whittle plan examples/search/stories260k.hcl
# Run:  whittle run examples/search/stories260k.hcl --out runs/search
#       whittle report runs/search --plot runs/search/search.png

variable "data" {
  type        = string
  default     = "../../../shared/data"
  description = "Directory holding the shared models and corpora."
}

variable "params" {
  type        = number
  default     = 160000
  description = "The parameter budget (an upper bound; candidates use it within the tolerance)."
}

variable "seed" {
  type    = number
  default = 1
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
  grid    = [1, 0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625, 0.5]
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "stories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.05
  seed                = var.seed
}

pass "score" {
  model   = model.teacher
  dataset = dataset.stories
  into    = "importance"
  samples = 128
  seq_len = local.seq_len
  layers  = ["lm_loss"]
  seed    = var.seed
}

pass "search" {
  model     = model.teacher
  scores    = scores.importance
  into      = "student"
  dataset   = dataset.stories
  metric    = "lm_loss"
  top_k     = 6
  sequences = 64
  seq_len   = local.seq_len
  batch     = 16
  seed      = var.seed

  # The paper's lightweight retraining: each candidate is distilled from
  # the teacher for this many tokens before it is scored.
  retrain_tokens = 65536
  retrain_lr     = 3e-3

  constraints {
    params    = var.params
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

pass "distill" {
  student = model.student
  teacher = model.teacher
  dataset = dataset.stories
  into    = "student"
  steps   = 400
  batch   = 16
  seq_len = local.seq_len
  lr      = 3e-3
  min_lr  = 3e-4
  warmup  = 20
  seed    = var.seed
}

pass "eval" {
  model     = model.student
  datasets  = [dataset.stories]
  sequences = 64
  seq_len   = local.seq_len
  prompts   = ["Once upon a time"]
}

output "student-gguf" {
  model  = model.student
  format = "gguf"
  path   = "out/student.gguf"
}
