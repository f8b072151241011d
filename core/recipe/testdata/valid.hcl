# A recipe that uses every block the language has.

variable "steps" {
  type        = number
  default     = 200
  description = "distillation steps"
}

variable "student_name" {
  type    = string
  default = "student"
}

variable "ratios" {
  type    = list(number)
  default = [0.5, 0.75]
}

variable "verbose" {
  default = false
}

locals {
  data_dir = "data"
  corpus   = "${local.data_dir}/corpus.txt"
  half     = var.ratios[0]
  tag      = upper(format("%s-%d", var.student_name, var.steps))
}

model "teacher" {
  path      = "models/stories260K.bin"
  tokenizer = "models/tok512.bin"
  format    = "llama2c"
}

dataset "corpus" {
  path                = local.corpus
  validation_fraction = 0.05
  seed                = 7
}

dataset "chat" {
  path = "${local.data_dir}/chat.jsonl"
}

task "hellaswag" {
  path     = "/abs/tasks/hellaswag.jsonl"
  limit    = 100
  few_shot = 5
}

backend "cpu" {}

backend "gpu" {
  plugin  = "./plugins/whittle-gotch"
  sha256  = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
  device  = "cuda:0"
  threads = 4
  flags   = ["a", "b"]
  verbose = var.verbose
}

pass "score" {
  model   = model.teacher
  data    = dataset.corpus
  samples = 64
  into    = "importance"
}

pass "prune" {
  name    = "prune-width"
  model   = model.teacher
  scores  = scores.importance
  ratio   = local.half
  backend = backend.cpu
  into    = var.student_name

  round {
    multiple = 8
  }
}

pass "prune" {
  model       = model.student
  ratio       = var.ratios[1]
  keep_layers = range(0, 4)
  into        = "student"
}

pass "eval" {
  model   = model.student
  teacher = model.teacher
  tasks   = [task.hellaswag]
  backend = backend.gpu
}

output "student" {
  model  = model.student
  format = "hf"
  path   = "student-hf"
  dtype  = "bfloat16"
}

output "gguf" {
  model  = model.student
  format = "gguf"
  path   = "out/${lower(local.tag)}.gguf"
}
