#!/usr/bin/env bash
# Regenerates the Python message classes of whittle's plugin protocol
# (core/plugin/proto/whittle/plugin/v1/{plugin,backend}.proto) into
# whittle_torch/gen/. Needs protoc (Debian: apt-get install
# protobuf-compiler); its version must match python3-protobuf's major
# version (Debian 12: protoc 3.21 for python3-protobuf 4.21). The gRPC
# service bindings are written by hand in whittle_torch/server.py (generic
# handlers), so no gRPC code generator is needed.
# With --check it changes nothing and fails if the committed code differs
# from what the .proto files generate.
set -euo pipefail

check=false
if [ "${1:-}" = "--check" ]; then
  check=true
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
protos="$(cd "$here/../../core/plugin/proto" && pwd)"

if ! command -v protoc >/dev/null 2>&1; then
  echo "generate.sh: protoc not found; install it with: apt-get install protobuf-compiler" >&2
  exit 1
fi

out="$here/whittle_torch/gen"
if $check; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
(cd "$protos" && protoc --proto_path=. --python_out="$out" whittle/plugin/v1/plugin.proto whittle/plugin/v1/backend.proto)
if $check; then
  status=0
  for f in plugin_pb2.py backend_pb2.py; do
    rel="whittle/plugin/v1/$f"
    if ! cmp -s "$out/$rel" "$here/whittle_torch/gen/$rel"; then
      echo "generate.sh: plugins/torch/whittle_torch/gen/$rel is out of date; run plugins/torch/scripts/generate.sh" >&2
      status=1
    fi
  done
  exit $status
fi
echo "generated: whittle_torch/gen/whittle/plugin/v1/{plugin,backend}_pb2.py"
