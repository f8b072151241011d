#!/usr/bin/env bash
# Export stories260K with whittle in every direction, then check each
# export with the independent checkers (check_hf_export.py: transformers'
# semantics; check_gguf_export.py: llama.cpp's). See scripts/README.md.
#
# Usage: scripts/check_exports.sh [WORKDIR]   (run from the repository root)
# Env:   PY (default /usr/bin/python3), DATA (default ../shared/data),
#        WHITTLE (default bin/whittle, built here if absent or BUILD=1).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
DATA=$(cd "${DATA:-../shared/data}" && pwd) || { echo "no data directory"; exit 2; }
M=$DATA/models/stories260K
EXP=$M/expected_greedy_200.txt
WHITTLE=${WHITTLE:-bin/whittle}
W=${1:-$(mktemp -d /tmp/whittle-exports.XXXXXX)}
mkdir -p "$W"
if [[ ! -x $WHITTLE || ${BUILD:-0} == 1 ]]; then
	go build -o bin/whittle ./cmd/whittle || exit 2
	WHITTLE=bin/whittle
fi
echo "work directory: $W"

fails=0
summary=()
# check KIND PATH WANTFILE LABEL [LEVEL [CHECKER-ARGS...]]
# LEVEL: required (must pass), info (a difference is reported only) or
# refused (must fail the structural checks, exit status 2).
check() {
	local kind=$1 path=$2 want=$3 label=$4 level=${5:-required} log rc
	shift 5 2>/dev/null || shift $#
	log=$W/$(echo "$label" | tr -c 'A-Za-z0-9._-' _).log
	"$PY" "scripts/check_${kind}_export.py" "$path" --expected "$want" "$@" >"$log" 2>&1
	rc=$?
	local verdict=PASS
	if [[ $level == refused ]]; then
		if [[ $rc == 2 ]]; then verdict="PASS (refused)"; else
			verdict="FAIL (not refused)"
			fails=$((fails + 1))
		fi
	elif [[ $rc != 0 ]]; then
		verdict=FAIL
		[[ $level == required ]] && fails=$((fails + 1)) || verdict="DIFF (informational)"
	fi
	summary+=("$(printf '%-22s %-58s %s' "$verdict" "$label")")
	if [[ $rc != 0 ]]; then
		summary+=("$(grep -A2 -m1 '^FAIL' "$log" | cut -c1-200 | sed 's/^/    /')")
	fi
}
# greedy PATH: whittle's own greedy text for a model, into PATH.want
greedy() {
	"$WHITTLE" generate --model "$1" --steps 200 --temperature 0 >"$1.want" 2>/dev/null || {
		echo "whittle generate failed on $1"
		fails=$((fails + 1))
	}
}
run() {
	local out
	out=$("$@" 2>&1) || {
		echo "FAILED: $*"
		echo "$out" | sed 's/^/    /'
		fails=$((fails + 1))
	}
}

# Conversions of the shipped model.
run "$WHITTLE" convert "$M/stories260K.bin" "$W/bin-hf" --to hf --tokenizer "$M/tok512.bin"
run "$WHITTLE" convert "$M/stories260K.gguf" "$W/gguf-hf" --to hf
run "$WHITTLE" convert "$W/bin-hf" "$W/hf-f32.gguf" --to gguf --dtype f32
run "$WHITTLE" convert "$W/bin-hf" "$W/hf-f16.gguf" --to gguf --dtype f16
run "$WHITTLE" convert "$W/bin-hf" "$W/hf-bf16.gguf" --to gguf --dtype bf16
run "$WHITTLE" convert "$M/stories260K.bin" "$W/bin.gguf" --to gguf --tokenizer "$M/tok512.bin"
run "$WHITTLE" convert "$M/stories260K.bin" "$W/bin-hf-f16" --to hf --dtype f16 --tokenizer "$M/tok512.bin"
run "$WHITTLE" convert "$M/stories260K.bin" "$W/bin-hf-bf16" --to hf --dtype bf16 --tokenizer "$M/tok512.bin"

check gguf "$M/stories260K.gguf" "$EXP" "shipped stories260K.gguf (checker sanity)"
check hf "$W/bin-hf" "$EXP" "bin+tok512 -> hf"
check hf "$W/gguf-hf" "$EXP" "gguf -> hf"
check gguf "$W/hf-f32.gguf" "$EXP" "hf -> gguf f32"
check gguf "$W/bin.gguf" "$EXP" "bin -> gguf"
check gguf "$W/hf-f16.gguf" "$EXP" "hf -> gguf f16 vs expected" info
check gguf "$W/hf-bf16.gguf" "$EXP" "hf -> gguf bf16 vs expected" info
check hf "$W/bin-hf-f16" "$EXP" "bin -> hf f16 vs expected" info
check hf "$W/bin-hf-bf16" "$EXP" "bin -> hf bf16 vs expected" info
for m in hf-f16.gguf hf-bf16.gguf; do
	greedy "$W/$m"
	check gguf "$W/$m" "$W/$m.want" "$m vs whittle generate"
	check gguf "$W/$m" "$W/$m.want" "$m vs whittle generate, --precision f32" required --precision f32
done
for m in bin-hf-f16 bin-hf-bf16; do
	greedy "$W/$m"
	check hf "$W/$m" "$W/$m.want" "$m vs whittle generate"
done
# Q8_0: whittle reads the blocks back as float32, as the checker does in
# --precision f32; llama.cpp also quantizes the activations (ggml mode).
run "$WHITTLE" convert "$M/stories260K.gguf" "$W/q8_0.gguf" --to gguf --dtype q8_0
greedy "$W/q8_0.gguf"
check gguf "$W/q8_0.gguf" "$W/q8_0.gguf.want" "gguf -> gguf q8_0 vs whittle generate, --precision f32" required --precision f32
check gguf "$W/q8_0.gguf" "$EXP" "gguf -> gguf q8_0 vs expected" info
run "$WHITTLE" convert "$M/stories260K.gguf" "$W/q4_0.gguf" --to gguf --dtype q4_0
greedy "$W/q4_0.gguf"
check gguf "$W/q4_0.gguf" "$W/q4_0.gguf.want" "gguf -> gguf q4_0 vs whittle generate, --precision f32" required --precision f32

# Pruned models: no expected file, so compare with whittle generate.
run "$WHITTLE" run examples/prune-stories260K.hcl --out "$W/example"
for m in student-hf student.gguf; do greedy "$W/example/out/$m"; done
check hf "$W/example/out/student-hf" "$W/example/out/student-hf.want" "example student-hf vs whittle generate"
check gguf "$W/example/out/student.gguf" "$W/example/out/student.gguf.want" "example student.gguf (f16) vs whittle generate"
check gguf "$W/example/out/student.gguf" "$W/example/out/student.gguf.want" "example student.gguf, --precision f32" required --precision f32

# The example's student only repeats one word, which many wrong forward
# passes would also produce; these milder prunes keep the text varied.
recipe() { # NAME PRUNE-ATTRIBUTE
	cat >"$W/$1.hcl" <<EOF
model "teacher" {
  path      = "$M/stories260K.bin"
  tokenizer = "$M/tok512.bin"
}
pass "prune-width" {
  model     = model.teacher
  into      = "student"
  criterion = "magnitude"
  $2
}
output "hf" {
  model  = model.student
  format = "hf"
  path   = "out/hf"
}
output "hfbf16" {
  model  = model.student
  format = "hf"
  path   = "out/hf-bf16"
  dtype  = "bf16"
}
output "gguf" {
  model  = model.student
  format = "gguf"
  path   = "out/student.gguf"
}
output "gguff16" {
  model  = model.student
  format = "gguf"
  path   = "out/student-f16.gguf"
  dtype  = "f16"
}
EOF
	run "$WHITTLE" run "$W/$1.hcl" --out "$W/$1"
}
recipe hidden60 "hidden = 60" # head_dim 8 is no longer hidden/heads
recipe kv2 "kv_heads = 2"     # GQA 4 query heads over 2 KV heads
for r in hidden60 kv2; do
	for m in hf hf-bf16; do
		greedy "$W/$r/out/$m"
		check hf "$W/$r/out/$m" "$W/$r/out/$m.want" "$r $m vs whittle generate"
	done
	for m in student.gguf student-f16.gguf; do
		greedy "$W/$r/out/$m"
		check gguf "$W/$r/out/$m" "$W/$r/out/$m.want" "$r $m vs whittle generate"
		check gguf "$W/$r/out/$m" "$W/$r/out/$m.want" "$r $m, --precision f32" required --precision f32
	done
done

# Variants no whittle command makes: untied (lm_head / output.weight
# written and used) and non-uniform layers (which transformers and
# llama.cpp's llama architecture cannot load; whittle documents this).
if run go run ./scripts/testdata/mkvariants "$M" "$W/variants"; then
	V=$W/variants
	for m in untied-hf untied.gguf nonuniform-hf nonuniform.gguf; do greedy "$V/$m"; done
	check hf "$V/untied-hf" "$V/untied-hf.want" "untied hf vs whittle generate"
	check gguf "$V/untied.gguf" "$V/untied.gguf.want" "untied gguf vs whittle generate"
	check hf "$V/nonuniform-hf" "$V/nonuniform-hf.want" "non-uniform hf: transformers cannot load" refused
	check gguf "$V/nonuniform.gguf" "$V/nonuniform.gguf.want" "non-uniform gguf: llama.cpp cannot load" refused
	check gguf "$V/nonuniform.gguf" "$V/nonuniform.gguf.want" "non-uniform gguf, --allow-nonuniform" required --allow-nonuniform
fi

echo
printf '%s\n' "${summary[@]}"
echo
if [[ $fails != 0 ]]; then
	echo "$fails required check(s) failed; logs in $W"
	exit 1
fi
echo "all required checks passed; logs in $W"
