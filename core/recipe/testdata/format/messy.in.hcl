model "teacher" {
path="a.bin"
    tokenizer   =   "tok.bin"
}

pass "prune" {
  model=model.teacher
  ratio  =  0.5
  into="student"
      round {
  multiple=8
  }
}
locals {
  x = [1,2,  3]
  y = {a=1, bb=2}
}
