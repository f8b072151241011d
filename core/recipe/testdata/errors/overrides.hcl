variable "n" {
  type    = number
  default = 1
}

variable "b" {
  type    = bool
  default = false
}

variable "l" {
  type    = list(number)
  default = []
}

variable "m" {
  type    = map(number)
  default = {}
}

variable "s" {
  type = string
}

variable "steps" {
  default = 10
}
