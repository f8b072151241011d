variable "steps" {
  type = number
}

variable "lr" {
  type    = number
  default = "fast"
}

variable "kind" {
  type    = "string"
  default = "a"
}

variable "ok" {
  default = "x"
}

model "teacher" {
  path   = "${var.ok}/${var.step}.bin"
  format = var.steps
}

dataset "d" {
  path = var.nothing
}
