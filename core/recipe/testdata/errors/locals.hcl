locals {
  a    = local.b
  b    = "${local.a}-x"
  self = local.self + 1
  good = 1
  uses = local.a
  m    = model.teacher
  typo = local.god
}

model "teacher" {
  path = local.a
}
