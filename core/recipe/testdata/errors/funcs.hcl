model "teacher" {
  path      = uper("t.bin")
  tokenizer = file("missing.txt")
}

dataset "d" {
  path = env("A", "b", "c")
}
