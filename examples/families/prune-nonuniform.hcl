# Non-uniform width pruning: the MLP neurons and KV heads of all layers are
# ranked together and the best kept under totals, so layers end with
# different widths (hidden stays one size). Llama-family students export to
# GGUF as llama.cpp's deci architecture, which runs per-layer sizes.
#
#   whittle run examples/families/prune-nonuniform.hcl --out runs/nu \
#     --var model=$PWD/ir/testdata/families/llama3
#
# Scores here are weight magnitudes (no data needed); with a score pass,
# use scores = scores.<name> instead of criterion.

variable "model" {
  type        = string
  description = "A Llama-family model (HF directory or GGUF file)."
}

variable "round_to" {
  type        = number
  default     = 8
  description = "Every layer's MLP width is a multiple of this (64 for real models)."
}

model "teacher" {
  path = var.model
}

pass "prune-width" {
  model          = model.teacher
  into           = "student"
  criterion      = "magnitude"
  uniform        = false
  hidden_ratio   = 0.75
  mlp_ratio      = 0.5  # of all layers' neurons together
  kv_heads_ratio = 0.75 # of all layers' KV heads together
  round_to       = var.round_to
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
  dtype  = "f32"
}
