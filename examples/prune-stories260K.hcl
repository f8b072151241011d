# Prune the shipped stories260K model in width and depth, then export it.
# Run with: whittle run examples/prune-stories260K.hcl --out runs/demo

variable "data" {
  type        = string
  default     = "../../shared/data"
  description = "Directory holding the shared models and corpora."
}

variable "mlp_ratio" {
  type    = number
  default = 0.75
}

locals {
  stories = "${var.data}/models/stories260K"
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

pass "prune-width" {
  model     = model.teacher
  into      = "student"
  criterion = "magnitude"
  mlp_ratio = var.mlp_ratio
  heads     = 4
  round_to  = 4
}

pass "prune-depth" {
  model  = model.student
  into   = "student"
  layers = [3]
}

output "student-hf" {
  model  = model.student
  format = "hf"
  path   = "out/student-hf"
}

output "student-gguf" {
  model  = model.student
  format = "gguf"
  path   = "out/student.gguf"
  dtype  = "f16"
}
