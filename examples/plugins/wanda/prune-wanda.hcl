# Score stories260K Wanda-style with the wanda-score pass of the
# whittle-plugin-wanda plugin (built from this directory), then prune its
# MLP width and attention heads by those scores.
#
#   go build -o ~/.whittle/plugins/whittle-plugin-wanda .
#   whittle plugins
#   whittle run prune-wanda.hcl --out runs/wanda

variable "data" {
  type        = string
  default     = "../../../../shared/data"
  description = "Directory holding the shared models and corpora."
}

variable "corpus" {
  type        = string
  default     = ""
  description = "Calibration text; default: the TinyStories validation split."
}

locals {
  stories = "${var.data}/models/stories260K"
  corpus  = var.corpus != "" ? var.corpus : "${var.data}/corpora/tinystories_val.txt"
}

model "teacher" {
  path      = "${local.stories}/stories260K.bin"
  tokenizer = "${local.stories}/tok512.bin"
}

dataset "calib" {
  path = local.corpus
}

pass "wanda-score" {
  model   = model.teacher
  dataset = dataset.calib
  into    = "wanda"
  samples = 32
  seq_len = 64
}

pass "prune-width" {
  model     = model.teacher
  scores    = scores.wanda
  into      = "student"
  mlp_ratio = 0.5
  kv_heads  = 2
}

output "student-hf" {
  model  = model.student
  format = "hf"
  path   = "out/student-hf"
}
