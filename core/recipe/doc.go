// Package recipe is whittle's recipe language: HCL files that declare
// inputs and an ordered list of passes, decoded into a typed Recipe.
//
// Blocks:
//
//	variable "n" { type = number, default = 1, description = "..." }  // -var n=2 overrides
//	locals { a = var.n * 2 }                                           // var. and local. only
//	model "teacher" { path = "...", tokenizer = "...", format = "hf" }
//	dataset "wiki" { path = "...", format = "text", validation_fraction = 0.1, seed = 0 }
//	task "hellaswag" { path = "...", limit = 0, few_shot = 0 }
//	backend "gpu" { plugin = "...", sha256 = "...", anything = ... }
//	pass "<kind>" { name = "...", into = "student", backend = backend.gpu, ...kind's schema }
//	output "final" { model = model.student, format = "hf", path = "...", dtype = "bf16" }
//
// References (model.x, scores.x, dataset.x, task.x, backend.x) evaluate to
// Ref values. A model or scores slot exists from its model block or from
// the `into` of an earlier pass; a pass may write a slot again, and later
// blocks see the newest value. Relative paths in model, dataset, task and
// backend blocks, and in file() and abspath(), resolve against the recipe's
// directory; output paths stay relative to the run directory.
//
// Load gathers every diagnostic it can, each with a file:line:col, sorted
// by position; FormatDiagnostic and WriteDiagnostics render them.
package recipe
