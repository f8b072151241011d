#!/usr/bin/env bash
# Makes the patched copy of gotch that plugins/gotch builds against:
#
#   build/gotch/       gotch v0.9.1's module (go.mod's replace points here)
#                      with libtch/lib.go's cgo flags rewritten to link only
#                      -ltch from build/lib, its C++ sources moved out (cgo
#                      would otherwise compile them), and whittle's ext added
#   build/libtch-src/  the C++ sources build_libtch.sh compiles into libtch.so
#
# Needs Go (go mod download); run it where the Go binary is built. The
# libtch-src folder travels to machines without Go (see gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GOTCH_VERSION=${GOTCH_VERSION:-v0.9.1}
GO=${GO:-go}
BUILD=${BUILD:-build}

dir=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/sugarme/gotch@$GOTCH_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/libtch/torch_api.cpp" ]; then
	echo "prepare: go mod download github.com/sugarme/gotch@$GOTCH_VERSION gave no module directory" >&2
	exit 1
fi

stamp="$GOTCH_VERSION $(cat csrc/whittle_ext.go csrc/whittle_ext.h scripts/prepare.sh | sha256sum | cut -c1-16)"
if [ -f "$BUILD/gotch/.whittle-stamp" ] && [ "$(cat "$BUILD/gotch/.whittle-stamp")" = "$stamp" ]; then
	exit 0
fi

rm -rf "$BUILD/gotch" "$BUILD/libtch-src"
mkdir -p "$BUILD/libtch-src"
cp -R "$dir" "$BUILD/gotch"
chmod -R u+w "$BUILD/gotch"
lt="$BUILD/gotch/libtch"

# C++ side: everything libtch.so is compiled from.
cp "$lt"/torch_api.cpp "$lt"/torch_api.h "$lt"/torch_api_generated.h "$lt"/stb_image*.h "$BUILD/libtch-src/"
cp "$lt"/torch_api_generated.cpp.h "$BUILD/libtch-src/torch_api_generated.cpp.h.orig"
cp csrc/whittle_ext.cpp csrc/whittle_ext.h "$BUILD/libtch-src/"
rm -f "$lt"/*.cpp "$lt"/torch_api_generated.cpp.h "$lt"/stb_image*.h

# Go side: C headers only, linked against build/lib/libtch.so.
cp csrc/whittle_ext.h "$lt/"
sed '1,/^$/d' csrc/whittle_ext.go | sed '1{/^$/d}' >"$lt/whittle_ext.go"
cat >"$lt/lib.go" <<'GO'
package libtch

// Rewritten by whittle's plugins/gotch/scripts/prepare.sh: the Go packages
// link only libtch.so (a C API), which build_libtch.sh compiles against
// whichever libtorch the machine has.

// #cgo CFLAGS: -I${SRCDIR} -O2 -Wno-deprecated-declarations
// #cgo LDFLAGS: -L${SRCDIR}/../../lib -ltch -Wl,-rpath,${SRCDIR}/../../lib
import "C"
GO
echo "$stamp" >"$BUILD/gotch/.whittle-stamp"
echo "prepare: gotch $GOTCH_VERSION from $dir -> $BUILD/gotch, C++ sources -> $BUILD/libtch-src"
