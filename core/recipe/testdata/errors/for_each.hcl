variable "ratios" {
  type    = map(number)
  default = { half = 0.5, quarter = 0.25 }
}

model "teacher" {
  path = "t.bin"
}

dataset "d" {
  path = "d.txt"
}

# Fine: two instances.
pass "prune" {
  for_each = var.ratios
  model    = model.teacher
  ratio    = each.value
  into     = "p_${each.key}"
}

# for_each cannot depend on pass outputs.
pass "score" {
  for_each = { a = model.teacher }
  model    = model.teacher
  data     = dataset.d
  into     = "s"
}

# Not a collection of keys.
pass "eval" {
  for_each = 3
  model    = model.teacher
}

# A list must hold strings, once each.
pass "eval" {
  for_each = ["a", 1]
  model    = model.teacher
}

pass "eval" {
  for_each = ["a", "a"]
  model    = model.teacher
}

# The same into for every instance; each.kee is no attribute; an error in
# the shared body is reported once, not once per instance.
pass "prune" {
  for_each = ["x", "y"]
  name     = "same"
  model    = model.teacher
  ratio    = each.kee
  into     = "same"
}

# each outside a for_each block.
pass "eval" {
  name  = "lonely"
  model = model.teacher
  tasks = [each.value]
}

# A key that makes no valid default name.
pass "eval" {
  for_each = ["has space"]
  model    = model.teacher
}

# A computed slot name that does not exist, and a literal one.
pass "eval" {
  for_each = ["half", "third"]
  name     = "eval-${each.key}"
  model    = model["p_${each.key}"]
}

pass "eval" {
  name  = "literal"
  model = model["p_thrid"]
}
