# The Minitron pipeline on a model of any supported family: score from
# activations, prune width (activation criterion) and depth (by LM loss),
# distill from the teacher, evaluate, export. With the tiny random family
# fixtures and a few steps it runs in seconds:
#
#   whittle run examples/families/minitron.hcl --out runs/gemma2 \
#     --var model=$PWD/ir/testdata/families/gemma2
#
# (the fixtures share stories260K's 512-piece tokenizer, so TinyStories
# text tokenizes for all of them).

variable "model" {
  type        = string
  description = "A model of any supported family (HF directory or GGUF file)."
}

variable "data" {
  type    = string
  default = "../../../shared/data"
}

variable "steps" {
  type    = number
  default = 20
}

model "teacher" {
  path = var.model
}

dataset "stories" {
  path                = "${var.data}/corpora/tinystories_val.txt"
  validation_fraction = 0.1
  seed                = 1
}

pass "score" {
  model   = model.teacher
  dataset = dataset.stories
  into    = "importance"
  samples = 16
  seq_len = 32
  layers  = ["lm_loss", "block_influence"]
  seed    = 1
}

pass "prune-width" {
  model        = model.teacher
  scores       = scores.importance
  into         = "student"
  hidden_ratio = 0.75
  mlp_ratio    = 0.5
}

pass "prune-depth" {
  model     = model.student
  scores    = scores.importance
  into      = "student"
  remove    = 1
  metric    = "lm_loss"
  selection = "individual"
}

pass "distill" {
  student = model.student
  teacher = model.teacher
  dataset = dataset.stories
  into    = "student"
  steps   = var.steps
  batch   = 4
  seq_len = 32
  lr      = 1e-3
  seed    = 1
}

pass "eval" {
  model    = model.student
  datasets = [dataset.stories]
  seq_len  = 32
}

output "student-hf" {
  model  = model.student
  format = "hf"
  path   = "out/student-hf"
}
