# whittle — build, test and demo targets. Every target works on a fresh
# Debian 12 machine with Go installed; `make deps` adds the optional system
# packages (OpenBLAS for the fast GEMM build, PyTorch for fixture scripts).

GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN      := bin/whittle
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X github.com/whittle-ml/whittle/internal/version.Version=$(VERSION)
DATA     ?= ../shared/data
TESTFLAGS ?= -timeout 25m
APT_GET  := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: all build test vet demo deps bench fuzz clean proto proto-check asm asm-check example-plugin gotch test-gotch gotch-gpu-prep torch test-torch torch-proto torch-proto-check results

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/whittle

# The tests need only Go modules (fetched through the module proxy); tests
# that read the shipped models skip when $(DATA) is absent.
test: vet
	$(GO) test $(TESTFLAGS) ./...

vet:
	$(GO) mod download
	$(GO) vet ./...
	# Other systems build from the same sources (no cgo, no Unix-only calls).
	GOOS=windows GOARCH=amd64 $(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	cd examples/plugins/wanda && GOWORK=off $(GO) vet .
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The main job on the default CPU backend with the shipped model: the whole
# Minitron method on stories260K (correct, score, prune, distill, eval,
# export); it ends with a summary table. Re-running resumes.
demo: build
	$(BIN) validate examples/stories260k/minitron.hcl
	$(BIN) plan examples/stories260k/minitron.hcl
	$(BIN) run examples/stories260k/minitron.hcl --out runs/minitron
	$(BIN) generate --model runs/minitron/out/student-hf --prompt "ROMEO:" --steps 96 --temperature 0.8 --seed 1

# Reproduce issue 5's findings on stories260K and regenerate docs/results.md;
# re-running resumes.
results:
	$(GO) run ./examples/stories260k/experiments/results $(RESULTS_FLAGS)

# Optional system packages: OpenBLAS (go build -tags openblas) and Debian's
# PyTorch with OpenBLAS, used by fixture generators and the benchmark peer.
deps:
	$(APT_GET) update -q
	$(APT_GET) install -y -q libopenblas-dev python3-torch protobuf-compiler

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./plugins/...

# A short coverage-guided run of every fuzz target.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "$$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Regenerate the plugin protocol's Go code (needs protoc: apt-get install
# protobuf-compiler; the Go generators are installed at pinned versions
# into bin/protoc-gen).
proto:
	core/plugin/proto/generate.sh
proto-check:
	core/plugin/proto/generate.sh --check

# Regenerate the CPU backend's AVX2 kernels (plugins/cpu/blas/kernel_amd64.s,
# needs python3), or check that the committed file is what the generator
# writes.
asm:
	plugins/cpu/blas/gen/generate.sh
asm-check:
	plugins/cpu/blas/gen/generate.sh --check

# The out-of-tree example plugin, into bin/ (use with WHITTLE_PLUGIN_PATH=bin).
example-plugin:
	cd examples/plugins/wanda && GOWORK=off $(GO) build -o ../../../bin/whittle-plugin-wanda .

# The libtorch backend (plugins/gotch, its own module): build it, or build
# and run the backend conformance suite against it on CPU libtorch.
GOTCH := plugins/gotch
gotch:
	cd $(GOTCH) && GO=$(GO) ./scripts/build.sh
test-gotch:
	@dpkg -s libtorch-dev >/dev/null 2>&1 || { $(APT_GET) update -q && $(APT_GET) install -y -q libtorch-dev libopenblas0; }
	cd $(GOTCH) && GO=$(GO) ./scripts/build.sh
	cd $(GOTCH) && $(GO) vet ./... && $(GO) test -count=1 $(TESTFLAGS) ./...
# Stage what the GPU machine needs (see docs/gotch.md).
gotch-gpu-prep:
	cd $(GOTCH) && GO=$(GO) ./scripts/gpu_prep.sh

# The PyTorch backend plugin (plugins/torch, Python on Debian's
# python3-torch): install it into bin/ (use with WHITTLE_PLUGIN_PATH=bin),
# or install its Debian dependencies and run its unit tests and the
# backend conformance suite through the plugin boundary at 1 and 2 ranks
# (gloo on CPU).
TORCH := plugins/torch
TORCH_DEBS := python3-torch python3-numpy python3-grpcio python3-protobuf protobuf-compiler openssl
torch:
	mkdir -p bin && ln -sf ../$(TORCH)/whittle-plugin-torch bin/whittle-plugin-torch
test-torch:
	@dpkg -s $(TORCH_DEBS) >/dev/null 2>&1 || { $(APT_GET) update -q && $(APT_GET) install -y -q $(TORCH_DEBS); }
	$(TORCH)/scripts/generate.sh --check
	cd $(TORCH) && OMP_NUM_THREADS=1 /usr/bin/python3 -m unittest discover -s tests
	WHITTLE_TORCH_TEST=1 OMP_NUM_THREADS=1 $(GO) test -count=1 $(TESTFLAGS) ./$(TORCH)/
# Regenerate the torch plugin's protocol messages (needs protoc), or check
# that the committed ones are what the .proto files generate.
torch-proto:
	$(TORCH)/scripts/generate.sh
torch-proto-check:
	$(TORCH)/scripts/generate.sh --check

clean:
	rm -rf bin runs plugins/gotch/build plugins/torch/build
