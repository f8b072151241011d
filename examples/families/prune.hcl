# Prune any supported family in width (and optionally depth) by weight
# magnitude, then export to Hugging Face and GGUF. The axes each size cuts
# (biases, q/k norms, Gemma 2's post norms included) come from the model's
# graph: `whittle inspect --graph MODEL` prints them.
#
#   whittle run examples/families/prune.hcl --out runs/qwen2 \
#     --var model=$PWD/ir/testdata/families/qwen2
#
# The layers to drop: --var 'drop=[2, 3]' (layer 1 by default). llama.cpp
# runs Phi-3 only with heads × head_dim = hidden: for the Phi-3 fixture
# (4 heads of 8, hidden 32 → 24) keep 3 heads: --var kv_heads=3.

variable "model" {
  type        = string
  description = "A model of any supported family (HF directory or GGUF file)."
}

variable "kv_heads" {
  type        = number
  default     = 1
  description = "KV heads kept per layer (their query heads come with them)."
}

variable "drop" {
  type    = list(number)
  default = [1]
}

model "teacher" {
  path = var.model
}

pass "prune-width" {
  model        = model.teacher
  into         = "student"
  criterion    = "magnitude"
  hidden_ratio = 0.75
  mlp_ratio    = 0.5
  kv_heads     = var.kv_heads
}

pass "prune-depth" {
  model  = model.student
  into   = "student"
  layers = var.drop
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
