#!/usr/bin/env bash
# Stage whittle's Hugging Face exports of every family, and whittle's logits
# on them, for scripts/device/check_transformers.py on a machine with
# transformers (the lent GPU machine). Run here, from the repository root:
#
#   scripts/device/families_prep.sh [DIR]     (default build/families)
#
# then, on the device (the tool copies the working tree; carry DIR):
#
#   python3 scripts/device/check_transformers.py DIR
#
# For each family fixture in ir/testdata/families it stages the plain
# export (DIR/<fam>) and a width-pruned one (DIR/<fam>-pruned, from
# examples/families/prune.hcl: width and depth), each with whittle's logits
# beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-build/families}
GO=${GO:-/usr/local/go/bin/go}
PY=${PY:-/usr/bin/python3}
rm -rf "$W" && mkdir -p "$W"
$GO build -o bin/whittle ./cmd/whittle
"$PY" - "$W/tokens.npy" <<'PYEOF'
import sys
import numpy as np
rng = np.random.default_rng(7)
t = rng.integers(3, 512, size=(2, 24), dtype=np.int32)
t[:, 0] = 1
np.save(sys.argv[1], t)
PYEOF
for fam in llama3 mistral qwen2 qwen3 gemma2 phi3 mixtral qwen2_moe qwen3_moe; do
	src=ir/testdata/families/$fam
	bin/whittle convert "$src" "$W/$fam" --to hf --force
	bin/whittle logits "$W/$fam" "$W/tokens.npy" "$W/$fam.logits.npy" --force >/dev/null
	# Gemma 2's GGUF needs windows on even layers only: drop a pair.
	# Phi-3's needs heads × head_dim = hidden (24 after pruning).
	drop='[1]' kv=1
	[[ $fam == gemma2 ]] && drop='[1, 2]'
	[[ $fam == phi3 ]] && kv=3
	bin/whittle run examples/families/prune.hcl --out "$W/run-$fam" --var model="$PWD/$src" --var "drop=$drop" --var kv_heads=$kv >/dev/null
	cp -r "$W/run-$fam/out/student-hf" "$W/$fam-pruned"
	bin/whittle logits "$W/$fam-pruned" "$W/tokens.npy" "$W/$fam-pruned.logits.npy" --force >/dev/null
	rm -rf "$W/run-$fam"
done
du -sh "$W"
