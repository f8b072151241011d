model "teacher" {
  path = "a.bin"
}

model "teacher" {
  path = "b.bin"
}

dataset "wiki" {
  path = "wiki.txt"
}

dataset "wiki" {
  path = "wiki2.txt"
}

model "my model" {
  path = "c.bin"
}

locals {
  a = 1
}

locals {
  a = 2
}

pass "prune" {
  model = model.teacher
  ratio = 0.5
  into  = "student"
}

pass "prune" {
  name  = "prune-1"
  model = model.student
  ratio = 0.5
  into  = "student"
}

pass "score" {
  name  = "bad/name"
  model = model.teacher
  data  = dataset.wiki
  into  = "s"
}

output "out" {
  model  = model.student
  format = "hf"
  path   = "out"
}

output "again" {
  model  = model.student
  format = "gguf"
  path   = "./out"
}
