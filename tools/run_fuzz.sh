#!/usr/bin/env bash
# Builds the libFuzzer targets for the checkpoint parsers (outside CMake: the parser .cpp files are
# compiled directly with -fsanitize=fuzzer,address,undefined) and runs each for a while.
#   tools/run_fuzz.sh [seconds per target, default 300] [target ...]
# targets: safetensors gguf hf_config (default: all). Work goes to ${OWLORE_FUZZ_DIR:-build-fuzz}:
# corpus/<target>/, crashes/<target>-*, <target>.log. A crashing input must be fixed, then copied
# to tests/data/fuzz_regressions/<target>-<name>.bin, where the CPU tests replay it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-300}"
shift || true
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(safetensors gguf hf_config)
work="${OWLORE_FUZZ_DIR:-$root/build-fuzz}"
mkdir -p "$work/crashes"
cxx="${CXX_FUZZ:-clang++}"
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -I"$root/src")

sources_for() {
  case "$1" in
    safetensors) echo "src/io/safetensors.cpp" ;;
    gguf) echo "src/io/gguf.cpp src/io/safetensors.cpp src/model/config.cpp" ;;
    hf_config) echo "src/io/hf_config.cpp src/io/safetensors.cpp src/model/config.cpp" ;;
    *) echo "unknown fuzz target '$1' (expected safetensors, gguf or hf_config)" >&2; exit 2 ;;
  esac
}

python3 "$root/tests/fuzz/make_seeds.py" "$work/seeds"
for t in "${targets[@]}"; do
  srcs=()
  for s in $(sources_for "$t"); do srcs+=("$root/$s"); done
  echo "building fuzz_$t" >&2
  "$cxx" "${flags[@]}" "$root/tests/fuzz/fuzz_$t.cpp" "${srcs[@]}" -o "$work/fuzz_$t"
done

for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t"
  regressions=()
  for f in "$root"/tests/data/fuzz_regressions/"$t"-*; do [[ -f "$f" ]] && regressions+=("$f"); done
  # Replay the committed crashers first: each must now run clean.
  if [[ ${#regressions[@]} -gt 0 ]]; then "$work/fuzz_$t" "${regressions[@]}" >/dev/null 2>&1; fi
  echo "fuzzing $t for ${seconds}s" >&2
  set +e
  "$work/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$t-" "$work/corpus/$t" "$work/seeds/$t" >"$work/$t.log" 2>&1
  rc=$?
  set -e
  runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$work/$t.log" | tail -n 1 || true)"
  echo "$t: exit $rc, ${runs:-no 'Done' line (crash?) - see $work/$t.log}"
done
