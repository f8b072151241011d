#!/usr/bin/env bash
# Stages what gpu_check.sh needs on the GPU machine (which has no Go) in
# build/gpu/, to be carried there: whittle, the plugin and the
# conformance-test binaries built here (they link only libtch.so, whose C ABI does not
# depend on the libtorch it is built against), libtch's C++ sources, the
# PyTorch peer and the shared data the suite reads.
#
#   scripts/gpu_prep.sh            then, with the device tool:
#   run  command: bash plugins/gotch/scripts/gpu_check.sh
#        carry:   ["plugins/gotch/build/gpu"]
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SHARED=${SHARED:-$(realpath -m ../../../shared)}
G=build/gpu
./scripts/prepare.sh
./scripts/build_libtch.sh build/libtch-src build/lib # the binaries link against it here
rm -rf "$G"
mkdir -p "$G/bin" "$G/shared/bench" "$G/shared/data/models" "$G/shared/data/corpora"
"$GO" build -trimpath -ldflags "-s -w" -o "$G/bin/whittle-plugin-gotch" ./cmd/whittle-plugin-gotch
"$GO" test -c -trimpath -ldflags "-s -w" -o "$G/bin/conformance.test" ./backend
# whittle itself (pure Go) runs the benchmarks, starting the plugin.
(cd ../.. && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "plugins/gotch/$G/bin/whittle" ./cmd/whittle)
cp -R build/libtch-src "$G/libtch-src"
if [ -d "$SHARED/data" ]; then
	cp -R "$SHARED/data/models/stories260K" "$G/shared/data/models/"
	cp "$SHARED/data/corpora/tinystories_val.txt" "$G/shared/data/corpora/"
	cp "$SHARED/bench/torch_peer.py" "$G/shared/bench/"
else
	echo "gpu_prep: $SHARED/data not found; the GPU run will skip stories260K and the peer" >&2
fi
du -sh "$G"
