model "teacher" {
  path = "t.bin"
  fromat = "hf"
}

pass "prune" {
  model = model.teacher
  ratoi = 0.5
  into  = "a"
}

pass "prune" {
  model       = model.teacher
  ratio       = "half"
  keep_layers = [1, "x"]
  into        = "b"

  round {
    multiple = 1.5
  }
}

pass "score" {
  model   = model.teacher
  samples = 10
  into    = "s"
}

pass "prune" {
  model = model.teacher
  ratio = 0.5
  into  = "c"
  round {
  }
  rounds {
  }
}
