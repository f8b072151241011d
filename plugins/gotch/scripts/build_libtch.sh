#!/usr/bin/env bash
# Compiles libtch.so (gotch's C API plus whittle's ext) against the libtorch
# find_libtorch.sh picks. Needs only bash, python3 and g++, so it runs on the
# GPU machine too.
#
#   build_libtch.sh [SRC [OUT]]    defaults: build/libtch-src build/lib
#
# gotch's generated wrappers target libtorch 2.1; those that do not compile
# against this libtorch are stubbed (they raise a C++ error when called). The
# list is detected from the compiler's errors, a round at a time, and cached
# per libtorch version in $STUB_CACHE (default stubs/) so later builds skip
# the detection. Rebuilds are skipped when sources and flags are unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
SRC=$(realpath -m "${1:-build/libtch-src}")
OUT=$(realpath -m "${2:-build/lib}")
STUB_CACHE=${STUB_CACHE:-stubs}
CXX=${CXX:-g++}
OPT=${OPT:--O1}
JOBS=${JOBS:-2}
export LC_ALL=C # plain quotes in diagnostics, which stubs.py parses

[ -f "$SRC/torch_api.cpp" ] || { echo "build_libtch: $SRC/torch_api.cpp missing (run scripts/prepare.sh)" >&2; exit 1; }
eval "$("$here/find_libtorch.sh")"
echo "build_libtch: libtorch $TORCH_VERSION ($TORCH_SOURCE, $TORCH_ROOT), cuda=$TORCH_CUDA, cxx11 abi=$TORCH_CXX11_ABI"

flags=(-std=c++17 -fPIC -w "-D_GLIBCXX_USE_CXX11_ABI=$TORCH_CXX11_ABI" "-I$SRC")
for inc in $TORCH_INCLUDES; do flags+=("-I$inc"); done
ext_flags=()
if [ "$TORCH_CUDA" = 1 ]; then
	cuda=${CUDA_HOME:-/usr/local/cuda}
	[ -d "$cuda/include" ] && ext_flags+=("-I$cuda/include")
	ext_flags+=(-DWHITTLE_CUDA)
fi
libs=(-ltorch -ltorch_cpu -lc10)
# --no-as-needed: nothing references libtorch_cuda's symbols directly, yet
# loading it is what registers the CUDA backend with the dispatcher.
[ "$TORCH_CUDA" = 1 ] && libs+=(-ltorch_cuda -lc10_cuda)

mkdir -p "$OUT"
key=$( (cat "$SRC/torch_api.cpp" "$SRC/torch_api_generated.cpp.h.orig" "$SRC/whittle_ext.cpp" "$SRC/whittle_ext.h" "$here/stubs.py"
	echo "$CXX $OPT ${flags[*]} ${ext_flags[*]} ${libs[*]} $TORCH_VERSION $TORCH_LIBDIR") | sha256sum | cut -c1-16)
if [ -f "$OUT/libtch.so" ] && [ "$(cat "$OUT/libtch.stamp" 2>/dev/null)" = "$key" ]; then
	echo "build_libtch: $OUT/libtch.so is up to date"
	exit 0
fi

cache="$STUB_CACHE/libtorch-$TORCH_VERSION.txt"
stubs=()
if [ -f "$cache" ]; then
	mapfile -t stubs < <(grep -v '^#' "$cache" | grep .)
	echo "build_libtch: ${#stubs[@]} stubs from $cache"
fi

gen="$SRC/torch_api_generated.cpp.h"
t0=$SECONDS
for round in 1 2 3 4 5 6; do
	cp "$gen.orig" "$gen"
	[ ${#stubs[@]} -gt 0 ] && python3 "$here/stubs.py" apply "$gen" "${stubs[@]}"
	if "$CXX" "${flags[@]}" -fsyntax-only "$SRC/torch_api.cpp" 2>"$OUT/syntax.log"; then
		break
	fi
	mapfile -t more < <(python3 "$here/stubs.py" detect "$OUT/syntax.log" "$gen")
	if [ ${#more[@]} -eq 0 ]; then
		echo "build_libtch: torch_api.cpp fails outside the generated wrappers:" >&2
		grep -m 20 'error' "$OUT/syntax.log" >&2
		exit 1
	fi
	echo "build_libtch: round $round: ${#more[@]} more wrappers to stub ($((SECONDS - t0)) s)"
	stubs+=("${more[@]}")
	if [ "$round" = 6 ]; then
		echo "build_libtch: still failing after 6 rounds; see $OUT/syntax.log" >&2
		exit 1
	fi
done
mkdir -p "$STUB_CACHE"
{
	echo "# gotch wrappers stubbed for libtorch $TORCH_VERSION (written by build_libtch.sh)"
	printf '%s\n' "${stubs[@]}" | sort -u
} >"$cache.tmp" && mv "$cache.tmp" "$cache"
echo "build_libtch: ${#stubs[@]} wrappers stubbed ($cache)"

obj="$OUT/obj"
mkdir -p "$obj"
"$CXX" "${flags[@]}" $OPT -c "$SRC/torch_api.cpp" -o "$obj/torch_api.o" &
api=$!
if ! "$CXX" "${flags[@]}" "${ext_flags[@]}" $OPT -c "$SRC/whittle_ext.cpp" -o "$obj/whittle_ext.o" 2>"$OUT/ext.log"; then
	echo "build_libtch: whittle_ext.cpp failed with fused AdamW / CUDA statistics; retrying without" >&2
	head -5 "$OUT/ext.log" >&2
	"$CXX" "${flags[@]}" -DWHITTLE_NO_FUSED_ADAMW $OPT -c "$SRC/whittle_ext.cpp" -o "$obj/whittle_ext.o"
fi
wait "$api"
"$CXX" -shared -o "$OUT/libtch.so.tmp" "$obj/torch_api.o" "$obj/whittle_ext.o" \
	"-L$TORCH_LIBDIR" "-Wl,-rpath,$TORCH_LIBDIR" -Wl,--no-as-needed "${libs[@]}" -Wl,--as-needed
mv "$OUT/libtch.so.tmp" "$OUT/libtch.so"
echo "$key" >"$OUT/libtch.stamp"
cat >"$OUT/libtorch.env" <<ENV
TORCH_VERSION='$TORCH_VERSION'
TORCH_SOURCE='$TORCH_SOURCE'
TORCH_LIBDIR='$TORCH_LIBDIR'
TORCH_CUDA='$TORCH_CUDA'
ENV
echo "build_libtch: $OUT/libtch.so built in $((SECONDS - t0)) s"
