variable "s" {
  type    = string
  default = "default"
}

variable "n" {
  type    = number
  default = 1
}

variable "b" {
  type    = bool
  default = false
}

variable "ls" {
  type    = list(string)
  default = []
}

variable "mn" {
  type    = map(number)
  default = {}
}

variable "obj" {
  type    = object({ name = string, steps = number })
  default = { name = "x", steps = 0 }
}

variable "untyped_num" {
  default = 5
}

variable "untyped_none" {
}

variable "untyped_list" {
  default = ["a"]
}

variable "anything" {
  type    = any
  default = "z"
}
