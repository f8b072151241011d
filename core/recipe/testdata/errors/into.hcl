model "teacher" {
  path = "t.bin"
}

model "student" {
  path = "s.bin"
}

pass "prune" {
  model = model.teacher
  ratio = 0.5
}

pass "eval" {
  model = model.teacher
  into  = "x"
}

pass "prune" {
  model = model.teacher
  ratio = 0.5
  into  = "not valid"
}

pass "prune" {
  model = model.teacher
  ratio = 0.5
  into  = "student"
}

pass "prune" {
  model = model.student
  ratio = 0.5
  into  = "student"
}
