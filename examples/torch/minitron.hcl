# The Minitron method on stories260K with every pass on the PyTorch
# backend plugin, data-parallel over 2 ranks (gloo on CPU; set
# device = "cuda" and nproc_per_node to the GPU count on a GPU machine):
#   score → prune (width) → distill → eval
# Run (from the repository root, after `make torch`):
#   WHITTLE_PLUGIN_PATH=bin whittle run examples/torch/minitron.hcl --out runs/torch
# See docs/distributed.md.

variable "data" {
  type        = string
  default     = "../../../shared/data"
  description = "Directory holding the shared models, corpora and tasks."
}

variable "ranks" {
  type    = number
  default = 2
}

locals {
  stories = "${var.data}/models/stories260K"
  seq_len = 128
}

backend "cluster" {
  plugin         = "torch"
  device         = "cpu"
  threads        = 1
  nproc_per_node = var.ranks
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "shakespeare" {
  path                = "${var.data}/corpora/tinyshakespeare.txt"
  validation_fraction = 0.05
  seed                = 1
}

task "winogrande" {
  path = "${var.data}/evals/winogrande.jsonl"
}

pass "score" {
  model   = model.teacher
  dataset = dataset.shakespeare
  into    = "importance"
  samples = 64
  seq_len = local.seq_len
  layers  = ["lm_loss", "block_influence"]
  seed    = 1
  backend = backend.cluster
}

pass "prune-width" {
  model  = model.teacher
  scores = scores.importance
  into   = "width"
  hidden = 48
  mlp    = 128
}

pass "distill" {
  student = model.width
  teacher = model.teacher
  dataset = dataset.shakespeare
  into    = "width"
  steps   = 40
  batch   = 8
  seq_len = local.seq_len
  lr      = 3e-3
  min_lr  = 3e-4
  warmup  = 5
  seed    = 1
  backend = backend.cluster
}

pass "eval" {
  model    = model.width
  datasets = [dataset.shakespeare]
  tasks    = [task.winogrande]
  seq_len  = local.seq_len
  prompts  = ["Once upon a time"]
  backend  = backend.cluster
}
