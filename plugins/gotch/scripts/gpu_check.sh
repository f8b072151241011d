#!/usr/bin/env bash
# The GPU check, run on the device machine from the repository root after
# scripts/gpu_prep.sh staged plugins/gotch/build/gpu here:
#
#   bash plugins/gotch/scripts/gpu_check.sh [all | build conformance bench ...]
#
#   build        libtch.so against the machine's PyTorch (CUDA), ~1.5 min
#   conformance  the backend conformance suite on cuda:0, fp32 then bf16
#   bench        whittle bench --backend gotch beside torch_peer.py on the
#                llama-1B (8×2048) and stories110M (16×1024) shapes (train,
#                distill, forward, importance); the table goes to
#                benchmarks-gotch.md and into docs/benchmarks.md
#
# Everything it learns lands in build/gpu/out: logs, the stub list for
# this libtorch, the tables. When $OUT is elsewhere (the device tool's),
# it receives gpu-check.tgz (all of it), benchmarks-gotch.md,
# benchmarks.md (docs/benchmarks.md with the table in) and info.json.
# DEVICE (default cuda), BENCH_SHAPES, BENCH_WORKLOADS, BENCH_SECONDS, BENCH_ARGS (more bench
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
# Everything lands in RES; deliver() hands $OUT the few files the device
# tool returns (it returns at most 8): the tables, and the rest as a tarball.
RES=$G/out
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
mkdir -p "$OUT" "$RES"
[ -x "$G/bin/whittle-plugin-gotch" ] && [ -x "$G/bin/whittle" ] || { echo "gpu_check: $G/bin missing: run scripts/gpu_prep.sh here first and carry plugins/gotch/build/gpu" >&2; exit 1; }
PYTHON=${PYTHON:-$(command -v python3)}
export PYTHON
rc=0

build() {
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$RES/gpu.txt"
	STUB_CACHE=$PWD/stubs ./scripts/build_libtch.sh "$G/libtch-src" "$G/lib" 2>&1 | tee "$RES/build_libtch.log" || return 1
	cp stubs/libtorch-*.txt "$RES/" 2>/dev/null
}

env_setup() {
	[ -f "$G/lib/libtch.so" ] || build || return 1
	# shellcheck disable=SC1091
	. "$G/lib/libtorch.env"
	export LD_LIBRARY_PATH="$G/lib:$TORCH_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	"$G/bin/whittle-plugin-gotch" info | tee "$RES/info.json"
}

conformance() {
	env_setup || return 1
	# The suite finds shared/data by walking up from its working directory.
	for prec in fp32 bf16; do
		# The family tests (every irtest family against the float64
		# reference) pick their own precisions: run them once.
		local run=TestConformance
		if [ "$prec" = fp32 ]; then run='TestConformance|TestFamily'; fi
		(cd "$G" && WHITTLE_GOTCH_DEVICE=$DEVICE WHITTLE_GOTCH_PRECISION=$prec timeout 240 "$G/bin/conformance.test" -test.run "$run" -test.v) \
			>"$RES/conformance-$prec.log" 2>&1
		local r=$?
		grep -E '^(--- |ok|FAIL|PASS)' "$RES/conformance-$prec.log" | tail -3
		echo "conformance $prec on $DEVICE: exit $r (log: conformance-$prec.log)"
		grep -E -- '--- FAIL' "$RES/conformance-$prec.log" | head -20
		[ $r = 0 ] || rc=1
	done
}

bench() {
	env_setup || return 1
	local peer=() shape batch seq parts=()
	[ -f "$G/shared/bench/torch_peer.py" ] && peer=(--peer --python "$PYTHON" --peer-script "$G/shared/bench/torch_peer.py")
	# whittle starts the plugin it finds on WHITTLE_PLUGIN_PATH; the
	# peer's sizes are those of docs/gotch.md's PyTorch figures.
	export WHITTLE_PLUGIN_PATH=$G/bin
	: >"$RES/bench.log"
	for shape in ${BENCH_SHAPES//,/ }; do
		batch=16 seq=1024
		[ "$shape" = llama-1B ] && batch=8 seq=2048
		"$G/bin/whittle" bench --backend gotch --set device="$DEVICE" --shape "$shape" --workload "$BENCH_WORKLOADS" \
			--batch "$batch" --seq "$seq" --seconds "$SECONDS_PER_RUN" ${BENCH_ARGS:-} "${peer[@]}" \
			--markdown "$RES/bench-$shape.md" 2>&1 | tee -a "$RES/bench.log"
		[ "${PIPESTATUS[0]}" = 0 ] || rc=1
		[ -f "$RES/bench-$shape.md" ] && parts+=("$RES/bench-$shape.md")
	done
	[ ${#parts[@]} -gt 0 ] || return 1
	# One table of every shape's rows, put into docs/benchmarks.md between
	# markers, and returned.
	local doc=${BENCH_DOC:-../../docs/benchmarks.md}
	mkdir -p "$(dirname "$doc")" "$RES/docs"
	[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
	python3 - "$doc" "$RES/benchmarks-gotch.md" "${parts[@]}" <<'PY'
import sys, datetime
doc, out, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
head, rows, notes = [], [], []
for i, p in enumerate(parts):
    lines = open(p).read().strip().splitlines()
    table = [l for l in lines if l.startswith("|")]
    head = head or table[:2]
    rows += table[2:]
    notes += [l for l in lines if l and not l.startswith("|") and l not in notes]
table = "\n".join(head + rows) + "\n\n" + "\n".join(notes)
open(out, "w").write(table + "\n")
begin, end = "<!-- gotch-gpu:begin -->", "<!-- gotch-gpu:end -->"
section = (f"{begin}\n## libtorch backend (gotch) on a GPU, beside PyTorch eager\n\n"
           f"Measured {datetime.date.today()} by plugins/gotch/scripts/gpu_check.sh (`whittle bench --backend gotch --peer`).\n\n{table}\n{end}")
text = open(doc).read()
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w").write(text)
PY
	cp "$doc" "$RES/docs/benchmarks.md"
}

deliver() {
	[ "$(realpath -m "$OUT")" = "$(realpath -m "$RES")" ] && return
	tar czf "$OUT/gpu-check.tgz" -C "$RES" .
	for f in benchmarks-gotch.md docs/benchmarks.md info.json; do
		[ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/"
	done
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
deliver
exit $rc
