model "teacher" {
  path   = ""
  format = "ggfu"
}

dataset "wiki" {
  path                = "w.txt"
  format              = "csv"
  validation_fraction = 1
  seed                = 1.5
}

task "t" {
  path     = "t.jsonl"
  limit    = -1
  few_shot = "many"
}

backend "b" {
  sha256 = "abc"
  plugin = 3
  extra  = nope.x
}

output "o" {
  model  = model.teacher
  format = "hf"
  path   = "o"
  dtype  = "fp8"
}

output "p" {
  format = "hf"
}

output "q" {
  model  = model.teacher
  format = "hf"
  path   = "q"
  dtype  = "q8_0"
}
