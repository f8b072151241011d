module github.com/whittle-ml/whittle/plugins/gotch

go 1.26.8

require (
	github.com/sugarme/gotch v0.9.1
	github.com/whittle-ml/whittle v0.0.0-00010101000000-000000000000
)

require github.com/x448/float16 v0.8.4 // indirect

// The main module, from this checkout.
replace github.com/whittle-ml/whittle => ../..

// gotch's libtch hard-codes cgo flags for one CUDA libtorch; scripts/prepare.sh
// writes a copy linked against build/lib/libtch.so (see docs/gotch.md).
replace github.com/sugarme/gotch => ./build/gotch
