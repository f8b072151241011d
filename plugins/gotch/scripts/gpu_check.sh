#!/usr/bin/env bash
# The GPU check, run on the device machine from the repository root after
# scripts/gpu_prep.sh staged plugins/gotch/build/gpu here:
#
#   bash plugins/gotch/scripts/gpu_check.sh [all | build conformance bench ...]
#
#   build        libtch.so against the machine's PyTorch (CUDA), ~1.5 min
#   conformance  the backend conformance suite on cuda:0, fp32 then bf16
#   bench        whittle-plugin-gotch bench beside torch_peer.py on the
#                llama-1B and stories110M shapes (train, distill, forward,
#                importance); the table goes to $OUT/benchmarks-gotch.md
#                and into docs/benchmarks.md (copied to $OUT/docs/)
#
# Everything it learns lands in $OUT (default build/gpu/out): logs, the
# stub list for this libtorch, the tables. DEVICE (default cuda),
# BENCH_SHAPES, BENCH_WORKLOADS, BENCH_SECONDS, BENCH_ARGS (more bench
# flags) and BENCH_DOC (default docs/benchmarks.md) override the defaults;
#   DEVICE=cpu BENCH_SHAPES=stories260K BENCH_ARGS="--batch 2 --seq 64" \
#   BENCH_DOC=/tmp/b.md scripts/gpu_check.sh all
# rehearses the script without a GPU.
#
# Device time: build ~1.5 min, conformance ~2 min, bench ~4–5 min; split
# the stages over two calls if one would pass the 10-minute limit.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
BENCH_SHAPES=${BENCH_SHAPES:-llama-1B,stories110M}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-train,distill,forward,importance}
G=$PWD/build/gpu
OUT=${OUT:-$G/out}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
mkdir -p "$OUT"
[ -x "$G/bin/whittle-plugin-gotch" ] || { echo "gpu_check: $G/bin missing: run scripts/gpu_prep.sh here first and carry plugins/gotch/build/gpu" >&2; exit 1; }
PYTHON=${PYTHON:-$(command -v python3)}
export PYTHON
rc=0

build() {
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
	STUB_CACHE=$PWD/stubs ./scripts/build_libtch.sh "$G/libtch-src" "$G/lib" 2>&1 | tee "$OUT/build_libtch.log" || return 1
	cp stubs/libtorch-*.txt "$OUT/" 2>/dev/null
}

env_setup() {
	[ -f "$G/lib/libtch.so" ] || build || return 1
	# shellcheck disable=SC1091
	. "$G/lib/libtorch.env"
	export LD_LIBRARY_PATH="$G/lib:$TORCH_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	"$G/bin/whittle-plugin-gotch" info | tee "$OUT/info.json"
}

conformance() {
	env_setup || return 1
	# The suite finds shared/data by walking up from its working directory.
	for prec in fp32 bf16; do
		(cd "$G" && WHITTLE_GOTCH_DEVICE=$DEVICE WHITTLE_GOTCH_PRECISION=$prec timeout 240 "$G/bin/conformance.test" -test.run TestConformance -test.v) \
			>"$OUT/conformance-$prec.log" 2>&1
		local r=$?
		grep -E '^(--- |ok|FAIL|PASS)' "$OUT/conformance-$prec.log" | tail -3
		echo "conformance $prec on $DEVICE: exit $r (log: conformance-$prec.log)"
		grep -E -- '--- FAIL' "$OUT/conformance-$prec.log" | head -20
		[ $r = 0 ] || rc=1
	done
}

bench() {
	env_setup || return 1
	local peer=()
	[ -f "$G/shared/bench/torch_peer.py" ] && peer=(--peer --python "$PYTHON" --peer-script "$G/shared/bench/torch_peer.py")
	"$G/bin/whittle-plugin-gotch" bench --device "$DEVICE" --shape "$BENCH_SHAPES" --workload "$BENCH_WORKLOADS" \
		--seconds "$SECONDS_PER_RUN" ${BENCH_ARGS:-} "${peer[@]}" --markdown "$OUT/benchmarks-gotch.md" 2>&1 | tee "$OUT/bench.log"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
	# Put the table into docs/benchmarks.md between markers, and return it.
	local doc=${BENCH_DOC:-../../docs/benchmarks.md}
	mkdir -p "$(dirname "$doc")" "$OUT/docs"
	[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
	python3 - "$doc" "$OUT/benchmarks-gotch.md" <<'PY'
import sys, datetime
doc, table = sys.argv[1], open(sys.argv[2]).read().strip()
begin, end = "<!-- gotch-gpu:begin -->", "<!-- gotch-gpu:end -->"
section = f"{begin}\n## libtorch backend (gotch) on a GPU, beside PyTorch eager\n\nMeasured {datetime.date.today()} by plugins/gotch/scripts/gpu_check.sh.\n\n{table}\n{end}"
text = open(doc).read()
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w").write(text)
PY
	cp "$doc" "$OUT/docs/benchmarks.md"
}

stages=("$@")
[ ${#stages[@]} = 0 ] && stages=(all)
for what in "${stages[@]}"; do
	case $what in
	build) build || rc=1 ;;
	conformance) conformance ;;
	bench) bench ;;
	all) build || rc=1; [ $rc = 0 ] && conformance; [ -f "$G/lib/libtch.so" ] && bench ;;
	*) echo "usage: gpu_check.sh [all | build conformance bench ...]" >&2; exit 2 ;;
	esac
done
exit $rc
