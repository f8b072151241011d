module github.com/whittle-ml/whittle/plugins/gotch

go 1.26.8

require github.com/sugarme/gotch v0.9.1

// The main module, from this checkout.
replace github.com/whittle-ml/whittle => ../..

// gotch's libtch hard-codes cgo flags for one CUDA libtorch; scripts/prepare.sh
// writes a copy linked against build/lib/libtch.so (see docs/gotch.md).
replace github.com/sugarme/gotch => ./build/gotch
