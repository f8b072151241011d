# Prune any supported family in width (and optionally depth) by weight
# magnitude, then export to Hugging Face and GGUF. The axes each size cuts
# (biases, q/k norms, Gemma 2's post norms included) come from the model's
# graph: `whittle inspect --graph MODEL` prints them.
#
#   whittle run examples/families/prune.hcl --out runs/qwen2 \
#     --var model=ir/testdata/families/qwen2
#
# Depth pruning: --var 'drop=[1]'.

variable "model" {
  type        = string
  description = "A model of any supported family (HF directory or GGUF file)."
}

variable "drop" {
  type    = list(number)
  default = []
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
  kv_heads     = 1
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
