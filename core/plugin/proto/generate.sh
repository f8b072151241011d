#!/usr/bin/env bash
# Regenerates the Go code of whittle's plugin protocol from the .proto files
# beside this script. Needs protoc (Debian: apt-get install
# protobuf-compiler) and Go; the Go generators are installed at pinned
# versions from the module proxy into bin/protoc-gen/ at the repo root.
# Run from anywhere: core/plugin/proto/generate.sh
# With --check it changes nothing and fails if the committed code differs
# from what the .proto files generate.
set -euo pipefail

check=false
if [ "${1:-}" = "--check" ]; then
  check=true
fi

# Keep protoc-gen-go in step with google.golang.org/protobuf in go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

if ! command -v protoc >/dev/null 2>&1; then
  echo "generate.sh: protoc not found; install it with: apt-get install protobuf-compiler" >&2
  exit 1
fi

tools="$root/bin/protoc-gen"
mkdir -p "$tools"
GOBIN="$tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$tools" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

out="$here"
if $check; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
cd "$here"
PATH="$tools:$PATH" protoc \
  --proto_path=. \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  whittle/plugin/v1/*.proto
if $check; then
  status=0
  for f in "$out"/whittle/plugin/v1/*.go; do
    rel="whittle/plugin/v1/$(basename "$f")"
    if ! cmp -s "$f" "$here/$rel"; then
      echo "generate.sh: core/plugin/proto/$rel is out of date; run core/plugin/proto/generate.sh" >&2
      status=1
    fi
  done
  exit $status
fi
echo "generated: $(ls whittle/plugin/v1/*.pb.go | tr '\n' ' ')"
