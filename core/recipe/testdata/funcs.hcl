# Functions whose results depend on the recipe directory or environment.
backend "probe" {
  prompt   = file("data/prompt.txt")
  home     = env("WHITTLE_TEST_ENV")
  fallback = env("WHITTLE_TEST_UNSET", "fallback")
  empty    = env("WHITTLE_TEST_UNSET")
  data     = abspath("data")
  up       = abspath("../x/./y")
  base     = basename("a/b/c.txt")
  dir      = dirname("a/b/c.txt")
  joined   = pathjoin("a", "b", "../c")
  short    = path("x", "y")
  std      = join(",", concat(split("-", "a-b"), [lower("C")], [tostring(max(1, 3))]))
  n        = length("héllo") + length([1, 2]) + length(lookup({ a = 1 }, "a", 0) == 1 ? "x" : "")
  json     = jsondecode(jsonencode({ k = coalesce(null, "v") }))
}
