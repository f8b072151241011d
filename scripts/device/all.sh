#!/usr/bin/env bash
# Every GPU check in one call of the device tool (its budget is 15 minutes
# of device time per session, 10 minutes per call). Prepare here first:
#
#   scripts/device/families_prep.sh build/families   # HF exports + whittle logits
#   make gotch-gpu-prep                               # plugins/gotch/build/gpu
#   plugins/torch/scripts/gpu_prep.sh                 # plugins/torch/build/gpu
#
# then one run with carry = [build/families, plugins/gotch/build/gpu,
# plugins/torch/build/gpu] and a timeout_s of 600:
#
#   bash scripts/device/all.sh [transformers gotch torch]
#
# Stages, in order of value per device minute (each bounded by `timeout`):
#   transformers  every family's HF export, plain and pruned, in real
#                 transformers against whittle's logits (< 1 min)
#   torch         the torch plugin: conformance on CUDA over all GPUs with
#                 NCCL, FSDP2 at 2 ranks, bench at llama-1B beside the peer
#   gotch         build libtch.so, conformance (fp32, bf16), bench
# Everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/device-out}
mkdir -p "$OUT"
stages=${*:-transformers torch gotch}
rc=0
for s in $stages; do
	start=$SECONDS
	case $s in
	transformers) OUT=$OUT timeout 120 python3 scripts/device/check_transformers.py build/families >"$OUT/transformers.log" 2>&1 ;;
	torch) OUT=$OUT timeout 280 bash plugins/torch/scripts/gpu_check.sh conformance fsdp2 bench >"$OUT/torch.log" 2>&1 ;;
	gotch) OUT=$OUT timeout 170 bash plugins/gotch/scripts/gpu_check.sh build conformance >"$OUT/gotch.log" 2>&1 ;;
	*) echo "unknown stage $s" >&2; exit 2 ;;
	esac
	r=$?
	echo "$s: exit $r in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
	[ $r -eq 0 ] || rc=1
done
exit $rc
