#!/usr/bin/env bash
# Locates a libtorch to build libtch.so against and prints its description as
# shell assignments (eval "$(find_libtorch.sh)"):
#
#   TORCH_ROOT      where it was found (for messages)
#   TORCH_SOURCE    LIBTORCH | python | debian
#   TORCH_INCLUDES  space-separated include directories
#   TORCH_LIBDIR    directory holding libtorch.so, libtorch_cpu.so, libc10.so
#   TORCH_VERSION   e.g. 2.11.0 or 1.13.0 (keys the stub cache)
#   TORCH_CUDA      1 when libtorch_cuda.so is present
#   TORCH_CXX11_ABI 0 or 1, the _GLIBCXX_USE_CXX11_ABI libtorch was built with
#
# Order: $LIBTORCH (an unpacked libtorch archive or any dir with include/ and
# lib/), the torch package of $PYTHON (default: python3 on PATH, then
# /usr/bin/python3) when it ships headers, then Debian's libtorch-dev.
set -euo pipefail

if [ -n "${PYTHON:-}" ]; then
	pythons=("$PYTHON")
else
	pythons=($(command -v python3 || true) /usr/bin/python3)
fi

emit() { # root source includes libdir abi
	local root=$1 source=$2 includes=$3 libdir=$4 abi=$5 ver cuda=0
	local vh
	for inc in $includes; do
		[ -f "$inc/torch/csrc/api/include/torch/version.h" ] && vh="$inc/torch/csrc/api/include/torch/version.h"
		[ -f "$inc/torch/version.h" ] && vh="$inc/torch/version.h"
	done
	ver=""
	if [ -n "${vh:-}" ]; then
		ver=$(tr -d '\\\n' <"$vh" | sed -n 's/.*#define TORCH_VERSION *"\([0-9][0-9.]*\)".*/\1/p')
	fi
	if [ -z "$ver" ]; then
		echo "find_libtorch: cannot read TORCH_VERSION under $includes" >&2
		exit 1
	fi
	[ -e "$libdir/libtorch_cuda.so" ] && cuda=1
	cat <<OUT
TORCH_ROOT='$root'
TORCH_SOURCE='$source'
TORCH_INCLUDES='$includes'
TORCH_LIBDIR='$libdir'
TORCH_VERSION='$ver'
TORCH_CUDA='$cuda'
TORCH_CXX11_ABI='$abi'
OUT
	exit 0
}

check_dir() { # dir -> ok when it has the headers and libraries
	[ -d "$1/include/torch/csrc/api/include" ] && [ -e "$1/lib/libtorch.so" ] && [ -e "$1/lib/libc10.so" ]
}

if [ -n "${LIBTORCH:-}" ]; then
	if ! check_dir "$LIBTORCH"; then
		echo "find_libtorch: LIBTORCH=$LIBTORCH lacks include/torch/csrc/api/include or lib/libtorch.so" >&2
		exit 1
	fi
	abi=${TORCH_CXX11_ABI:-}
	if [ -z "$abi" ]; then
		# Official archives say which ABI they use in their name only; the
		# symbols tell: the new ABI mangles std::string as __cxx11.
		if nm -D --defined-only "$LIBTORCH/lib/libc10.so" 2>/dev/null | grep -q '__cxx11'; then abi=1; else abi=0; fi
	fi
	emit "$LIBTORCH" LIBTORCH "$LIBTORCH/include $LIBTORCH/include/torch/csrc/api/include" "$LIBTORCH/lib" "$abi"
fi

for py in "${pythons[@]}"; do
	[ -x "$py" ] || continue
	if dir=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
		if check_dir "$dir"; then
			abi=$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo 1)
			emit "$dir" "python ($py)" "$dir/include $dir/include/torch/csrc/api/include" "$dir/lib" "$abi"
		fi
	fi
done

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
if [ -d /usr/include/torch/csrc/api/include ] && [ -e "/usr/lib/$multiarch/libtorch.so" ]; then
	emit /usr debian "/usr/include /usr/include/torch/csrc/api/include" "/usr/lib/$multiarch" 1
fi

echo "find_libtorch: no libtorch found: set LIBTORCH, install PyTorch for $PYTHON, or apt-get install libtorch-dev" >&2
exit 1
