model "teacher" {
  path = "a.bin"
  format = 
}
