model "teacher" {
  path = "t.bin"
}

pass "prun" {
  model = model.teacher
  into  = "student"
}

pass "zzz" {
}

pass "eval" {
  model = model.student
}
