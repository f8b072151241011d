#!/usr/bin/env bash
# Builds the gotch backend here: the patched gotch module, libtch.so
# against the local libtorch (see find_libtorch.sh), and the plugin binary
# build/bin/whittle-plugin-gotch.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
./scripts/prepare.sh
./scripts/build_libtch.sh build/libtch-src build/lib
"$GO" build -o build/bin/whittle-plugin-gotch ./cmd/whittle-plugin-gotch
echo "build: build/bin/whittle-plugin-gotch (links build/lib/libtch.so)"
