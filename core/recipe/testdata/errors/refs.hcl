model "teacher" {
  path = "t.bin"
}

dataset "wiki" {
  path = "w.txt"
}

backend "cpu" {}

pass "score" {
  model   = dataset.wiki
  data    = dataset.wikk
  samples = modle.teacher
  into    = "s"
}

pass "prune" {
  model   = "teacher"
  scores  = scores.s
  ratio   = 0.5
  backend = backend.gpu
  into    = "student"
}

pass "eval" {
  model   = model.student
  teacher = model
  tasks   = [task.none]
  backend = model.teacher
}

output "o" {
  model  = scores.s
  format = "hf"
  path   = "o"
}
