model "teacher" {
  path = "t.bin"
}

pass "prune" {
  model = { kind = "model", name = "ghost" }
  ratio = 0.5
  into  = "a"
}

pass "prune" {
  model = { kind = tostring(null), name = "x" }
  ratio = 0.5
  into  = "b"
}

pass "eval" {
  model = model.teacher
  tasks = [{ kind = "task", name = "ghost" }]
}

output "o" {
  model  = { kind = "model", name = "a" }
  format = "hf"
  path   = "o"
}

task "real" {
  path = "t.jsonl"
}

pass "eval" {
  model = model.teacher
  tasks = [task.real, model.teacher]
}

pass "eval" {
  model = model.teacher
  tasks = task.real
}
