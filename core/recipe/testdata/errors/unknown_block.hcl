modle "teacher" {
  path = "a.bin"
}

steps = 3
