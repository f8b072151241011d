#!/bin/sh
# Runs examples/moe/moe.hcl for each seed (default 1 2 3 4 5) into
# runs/moe/seedN (an existing run is resumed), then prints the table of
# README.md. Usage: examples/moe/run.sh [SEED...]
# WHITTLE (default: go run ./cmd/whittle) and DATA (default: the recipe's)
# may be set in the environment.
set -eu
cd "$(dirname "$0")/../.."
seeds=${*:-1 2 3 4 5}
whittle=${WHITTLE:-go run ./cmd/whittle}
for s in $seeds; do
  if [ -n "${DATA:-}" ]; then
    $whittle run examples/moe/moe.hcl --var seed="$s" --var data="$DATA" --out "runs/moe/seed$s"
  else
    $whittle run examples/moe/moe.hcl --var seed="$s" --out "runs/moe/seed$s"
  fi
done
dirs=""
for s in $seeds; do dirs="$dirs runs/moe/seed$s"; done
go run ./examples/moe/table $dirs
