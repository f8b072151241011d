#!/usr/bin/env bash
# Regenerates plugins/cpu/blas/kernel_amd64.s from gen_kernel.py (needs
# python3). With --check it changes nothing and fails if the committed
# assembly differs from what the generator writes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
blas="$(cd "$here/.." && pwd)"

if ! command -v python3 >/dev/null 2>&1; then
  echo "generate.sh: python3 not found; install it with: apt-get install python3" >&2
  exit 1
fi

tmp="$(mktemp -d "$blas/.generate.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$blas" && python3 gen/gen_kernel.py >"$tmp/kernel_amd64.s")
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$blas/kernel_amd64.s" "$tmp/kernel_amd64.s"; then
    echo "generate.sh: plugins/cpu/blas/kernel_amd64.s is out of date; run plugins/cpu/blas/gen/generate.sh" >&2
    exit 1
  fi
  exit 0
fi
# Replace the file in one step, never leaving it half written.
mv "$tmp/kernel_amd64.s" "$blas/kernel_amd64.s"
echo "generated: plugins/cpu/blas/kernel_amd64.s"
