# Finding 2: teacher correction when the distillation data is out of the
# teacher's domain (a TinyStories teacher, tiny-shakespeare distillation
# data).
#
# The teacher's loss on both corpora is measured before and after a short
# full fine-tune on shakespeare (150 steps of 16 × 128 tokens). One student
# (width-pruned to hidden 48, MLP 128 by importance scores of the original
# teacher, so that the student is the same in both arms) is then distilled
# for the same budget from the original and from the corrected teacher.
# TinyStories validation loss shows what each arm keeps of the original
# domain.
#
# Run: whittle run examples/stories260k/experiments/02-teacher-correction.hcl --out runs/experiments/02-teacher-correction

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
  description = "Distillation tokens of each student: 400 steps of 16 × 128."
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

# Held out from TinyStories (the teacher's own domain); evaluation only.
dataset "tinystories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.1
  seed                = var.seed
}

pass "eval" {
  name     = "eval-teacher"
  model    = model.teacher
  datasets = [dataset.shakespeare, dataset.tinystories]
  seq_len  = local.seq_len
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

pass "eval" {
  name     = "eval-corrected"
  model    = model.corrected
  datasets = [dataset.shakespeare, dataset.tinystories]
  seq_len  = local.seq_len
}

# Importance from the original teacher: both arms start from one student.
pass "score" {
  model   = model.teacher
  dataset = dataset.shakespeare
  into    = "importance"
  samples = 256
  seq_len = local.seq_len
  seed    = var.seed
}

pass "prune-width" {
  model  = model.teacher
  scores = scores.importance
  into   = "student"
  hidden = 48
  mlp    = 128
}

pass "distill" {
  name       = "kd-from-original"
  student    = model.student
  teacher    = model.teacher
  dataset    = dataset.shakespeare
  into       = "from_original"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 100
}

pass "distill" {
  name       = "kd-from-corrected"
  student    = model.student
  teacher    = model.corrected
  dataset    = dataset.shakespeare
  into       = "from_corrected"
  tokens     = var.tokens
  batch      = local.batch
  seq_len    = local.seq_len
  lr         = 3e-3
  min_lr     = 3e-4
  warmup     = 20
  seed       = var.seed
  eval_every = 100
}

pass "eval" {
  name     = "eval-from-original"
  model    = model.from_original
  datasets = [dataset.shakespeare, dataset.tinystories]
  seq_len  = local.seq_len
}

pass "eval" {
  name     = "eval-from-corrected"
  model    = model.from_corrected
  datasets = [dataset.shakespeare, dataset.tinystories]
  seq_len  = local.seq_len
}
