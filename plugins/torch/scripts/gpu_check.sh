#!/usr/bin/env bash
# The torch plugin's GPU check, for the device tool, after gpu_prep.sh
# staged plugins/torch/build/gpu here (carry it):
#
#   bash plugins/torch/scripts/gpu_check.sh [all | info unit conformance fsdp2 bench ...]
#
#   info         what the machine's torch offers (version, GPUs, NCCL, fully_shard)
#   unit         the Python unit tests (strategy selection on this torch)
#   conformance  the backend conformance suite through the plugin boundary
#                on CUDA, fp32, with as many ranks as there are GPUs (NCCL
#                when more than one), CPU backend as the reference
#   fsdp2        the suite and the memory, dead-rank and RoPE tests at 2
#                ranks on CPU (gloo): on torch >= 2.4 this is the FSDP2
#                path (parameters, gradients, optimizer state sharded),
#                which Debian 12's torch 1.13 cannot run
#   bench        whittle bench --backend torch beside torch_peer.py at the
#                llama-1B shape (train, distill, forward, importance), bf16,
#                all GPUs; goal: >= 0.95x the peer's tokens/s per GPU
#
# The device machine's python3 holds torch 2.11, grpcio and protobuf;
# WHITTLE_TORCH_PYTHON makes the plugin run under it. Results land in
# $OUT (the device tool's), else build/gpu/out: logs, info.json, bench.txt.
# Device time: conformance ~2 min, fsdp2 ~3 min, bench ~4 min; split the
# stages over two calls if one would pass the 10-minute limit.
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/build/gpu
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
[ -x "$G/bin/torch.test" ] && [ -x "$G/bin/whittle" ] || { echo "gpu_check: $G/bin missing: run plugins/torch/scripts/gpu_prep.sh here first and carry plugins/torch/build/gpu" >&2; exit 1; }
export WHITTLE_TORCH_PYTHON=${WHITTLE_TORCH_PYTHON:-$(command -v python3)}
export WHITTLE_TORCH_PLUGIN=$PWD/whittle-plugin-torch PYTHONUNBUFFERED=1
NGPU=$("$WHITTLE_TORCH_PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
rc=0

info() {
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
	"$WHITTLE_TORCH_PYTHON" whittle-plugin-torch info | tee "$OUT/info.json"
}

unit() {
	"$WHITTLE_TORCH_PYTHON" -m unittest discover -s tests 2>&1 | tail -3 | tee "$OUT/unit.log"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
}

suite() { # name, env..., -test.run pattern
	local name=$1 run=$2
	shift 2
	# The suite finds shared/data by walking up from its working directory.
	(cd "$G" && env WHITTLE_TORCH_TEST=1 "$@" timeout 540 "$G/bin/torch.test" -test.run "$run" -test.v) >"$OUT/$name.log" 2>&1
	local r=$?
	grep -E -- '--- (FAIL|SKIP)' "$OUT/$name.log" | head -30
	echo "$name: exit $r, $(grep -c -- '--- PASS' "$OUT/$name.log") passed (log: $name.log)"
	[ $r = 0 ] || rc=1
}

conformance() {
	[ "$NGPU" -ge 1 ] || { echo "conformance: no GPU"; rc=1; return; }
	suite conformance-cuda 'TestServed(Conformance|RopeScaling|Info)$' WHITTLE_TORCH_DEVICE=cuda WHITTLE_TORCH_RANKS="$NGPU"
}

fsdp2() {
	suite fsdp2-cpu 'TestServed(Conformance|BenchZeRO|DeadRank|RopeScaling)$' WHITTLE_TORCH_DEVICE=cpu WHITTLE_TORCH_RANKS=2
}

bench() {
	[ "$NGPU" -ge 1 ] || { echo "bench: no GPU"; rc=1; return; }
	local peer=()
	[ -f "$G/shared/bench/torch_peer.py" ] && peer=(--peer --python "$WHITTLE_TORCH_PYTHON" --peer-script "$G/shared/bench/torch_peer.py")
	export WHITTLE_PLUGIN_PATH=$PWD
	(cd "$G" && timeout 540 "$G/bin/whittle" bench --backend torch --set device=cuda --set precision=bf16 \
		--set nproc_per_node="$NGPU" --shape llama-1B --workload train,distill,forward,importance \
		--batch 8 --seq 2048 --seconds "${BENCH_SECONDS:-8}" "${peer[@]}") 2>&1 | tee "$OUT/bench.txt"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
}

stages=("$@")
[ ${#stages[@]} = 0 ] || [ "${stages[0]}" = all ] && stages=(info unit conformance fsdp2 bench)
for s in "${stages[@]}"; do
	echo "== $s"
	"$s"
done
exit $rc
