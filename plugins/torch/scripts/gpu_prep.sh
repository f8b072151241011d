#!/usr/bin/env bash
# Stages what gpu_check.sh needs on the GPU machine (which has no Go) in
# plugins/torch/build/gpu/, to be carried there: whittle and the plugin's
# test binary built here, the PyTorch peer and the shared data the
# conformance suite reads. The plugin itself is Python and travels with the
# working tree.
#
#   plugins/torch/scripts/gpu_prep.sh          then, with the device tool:
#   run  command: bash plugins/torch/scripts/gpu_check.sh
#        carry:   ["plugins/torch/build/gpu"]
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SHARED=${SHARED:-$(realpath -m ../../../shared)}
G=build/gpu
rm -rf "$G"
mkdir -p "$G/bin" "$G/shared/bench" "$G/shared/data/models" "$G/shared/data/corpora"
(cd ../.. && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "plugins/torch/$G/bin/whittle" ./cmd/whittle)
(cd ../.. && CGO_ENABLED=0 "$GO" test -c -trimpath -ldflags "-s -w" -o "plugins/torch/$G/bin/torch.test" ./plugins/torch)
if [ -d "$SHARED/data" ]; then
	cp -R "$SHARED/data/models/stories260K" "$G/shared/data/models/"
	cp "$SHARED/data/corpora/tinystories_val.txt" "$G/shared/data/corpora/"
	cp "$SHARED/bench/torch_peer.py" "$G/shared/bench/"
else
	echo "gpu_prep: $SHARED/data not found; the GPU run will skip stories260K and the peer" >&2
fi
du -sh "$G"
