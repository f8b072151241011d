model "teacher" {
  path = "t.bin"
}

dataset "wiki" {
  path = "w.txt"
}

pass "score" {
  model = model.student
  data  = dataset.wiki
  into  = "importance"
}

pass "prune" {
  model  = model.pruned
  scores = scores.importance
  ratio  = 0.5
  into   = "pruned"
}

pass "prune" {
  model  = model.studnet
  scores = scores.importanc
  ratio  = 0.5
  into   = "student"
}

pass "eval" {
  model = model.student
}

output "final" {
  model  = model.distilled
  format = "hf"
  path   = "final"
}
