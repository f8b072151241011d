# The Minitron method on the real stories260K (a TinyStories teacher), with
# tiny-shakespeare as the distillation data:
#   correct → score → prune (width, and a depth variant) → distill → eval → export
# Run: whittle run examples/stories260k/minitron.hcl --out runs/minitron

variable "data" {
  type        = string
  default     = "../../../shared/data"
  description = "Directory holding the shared models, corpora and tasks."
}

variable "seed" {
  type    = number
  default = 1
}

variable "distill_steps" {
  type    = number
  default = 400
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
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

task "winogrande" {
  path = "${var.data}/evals/winogrande.jsonl"
}

# 1. The original teacher, before anything changes.
pass "eval" {
  name     = "eval-teacher"
  model    = model.teacher
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
}

# 2. Teacher correction: adapt the teacher to the distillation data.
pass "correct" {
  model   = model.teacher
  dataset = dataset.shakespeare
  into    = "corrected"
  steps   = 150
  batch   = 16
  seq_len = local.seq_len
  lr      = 2e-3
  min_lr  = 2e-4
  warmup  = 10
  seed    = var.seed
}

pass "eval" {
  name     = "eval-corrected"
  model    = model.corrected
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
}

# 3. Importance: activation statistics and per-layer rankings.
pass "score" {
  model   = model.corrected
  dataset = dataset.shakespeare
  into    = "importance"
  samples = 256
  seq_len = local.seq_len
  layers  = ["lm_loss", "block_influence"]
  seed    = var.seed
}

# 4a. Width pruning: hidden 64→48, MLP 172→128, heads kept.
pass "prune-width" {
  model  = model.corrected
  scores = scores.importance
  into   = "width"
  hidden = 48
  mlp    = 128
}

# 4b. Depth pruning: drop the least important layer by LM loss.
pass "prune-depth" {
  model     = model.corrected
  scores    = scores.importance
  into      = "depth"
  remove    = 1
  metric    = "lm_loss"
  selection = "individual"
}

pass "eval" {
  name     = "eval-width-pruned"
  model    = model.width
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
}

pass "eval" {
  name     = "eval-depth-pruned"
  model    = model.depth
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
}

# 5. Knowledge distillation from the corrected teacher.
pass "distill" {
  name    = "distill-width"
  student = model.width
  teacher = model.corrected
  dataset = dataset.shakespeare
  into    = "width"
  steps   = var.distill_steps
  batch   = 16
  seq_len = local.seq_len
  lr      = 3e-3
  min_lr  = 3e-4
  warmup  = 20
  seed    = var.seed
}

pass "distill" {
  name    = "distill-depth"
  student = model.depth
  teacher = model.corrected
  dataset = dataset.shakespeare
  into    = "depth"
  steps   = var.distill_steps
  batch   = 16
  seq_len = local.seq_len
  lr      = 3e-3
  min_lr  = 3e-4
  warmup  = 20
  seed    = var.seed
}

pass "eval" {
  name     = "eval-width-distilled"
  model    = model.width
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
  prompts  = ["ROMEO:"]
}

pass "eval" {
  name     = "eval-depth-distilled"
  model    = model.depth
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
  prompts  = ["ROMEO:"]
}

# 6. Export the width-pruned student for transformers and llama.cpp.
output "student-hf" {
  model  = model.width
  format = "hf"
  path   = "out/student-hf"
}

output "student-gguf" {
  model  = model.width
  format = "gguf"
  path   = "out/student.gguf"
}
