#!/usr/bin/env bash
# Builds the libFuzzer targets for the file readers (outside CMake: the reader .cpp files are
# compiled directly with -fsanitize=fuzzer,address,undefined) and runs each for a while.
#   tools/run_fuzz.sh [seconds per target, default 300; 0 builds and replays the regressions only] [target ...]
# targets: safetensors gguf hf_config tokenizer_json gguf_vocab owltok jsonl tiktoken (default: all).
# OWLORE_FUZZ_RUNS=N stops each target after N inputs (or the seconds, whichever comes first).
# Work goes to ${OWLORE_FUZZ_DIR:-build-fuzz}: corpus/<target>/, crashes/<target>-*, <target>.log.
# A crashing input must be fixed, then copied to tests/data/fuzz_regressions/<target>-<name>.bin,
# where the CPU tests replay it. docs/fuzz.md records the runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-300}"
shift || true
targets=("$@")
work="${OWLORE_FUZZ_DIR:-$root/build-fuzz}"
mkdir -p "$work/crashes"
# Each .cpp is compiled on its own, through ccache when there is one, so that the readers
# several targets share are compiled once.
read -r -a cxx <<<"${CXX_FUZZ:-clang++}"
if command -v ccache >/dev/null; then cxx=(ccache "${cxx[@]}"); fi
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -I"$root/src" -DOWLORE_SOURCE_DIR="\"$root\"")
read -r -a libs <<<"$(pkg-config --libs libpcre2-8)"  # the tokenizer's pre-tokenizer regexes

known="safetensors gguf hf_config tokenizer_json gguf_vocab owltok jsonl tiktoken"
[[ ${#targets[@]} -eq 0 ]] && read -r -a targets <<<"$known"

# The .cpp files a target needs, found from its includes (so a reader that moves or gains a
# helper file still builds): every quoted include is looked up under src/ and tests/fuzz/, and
# each src/ header with a .cpp beside it brings that .cpp and, in turn, its includes.
sources_for() {
  local queue=("tests/fuzz/fuzz_$1.cpp") seen=" " file inc
  local -a found=()
  while [[ ${#queue[@]} -gt 0 ]]; do
    file="${queue[0]}"
    queue=("${queue[@]:1}")
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$root/$file"); do
      for cand in "src/$inc" "tests/fuzz/$inc"; do
        [[ -f "$root/$cand" && "$seen" != *" $cand "* ]] || continue
        seen+="$cand "
        queue+=("$cand")
        local cpp="${cand%.h}.cpp"
        if [[ "$cand" == src/*.h && -f "$root/$cpp" && "$seen" != *" $cpp "* ]]; then
          seen+="$cpp "
          queue+=("$cpp")
          found+=("$cpp")
        fi
        break
      done
    done
  done
  echo "${found[@]}"
}

for t in "${targets[@]}"; do
  if [[ " $known " != *" $t "* || ! -f "$root/tests/fuzz/fuzz_$t.cpp" ]]; then
    echo "unknown fuzz target '$t' (expected one of: $known)" >&2
    exit 2
  fi
done

python3 "$root/tests/fuzz/make_seeds.py" "$work/seeds"
for t in "${targets[@]}"; do
  srcs=()
  for s in $(sources_for "$t"); do srcs+=("$root/$s"); done
  echo "building fuzz_$t from ${srcs[*]#"$root/"}" >&2
  objs=()
  for s in "$root/tests/fuzz/fuzz_$t.cpp" "${srcs[@]}"; do
    o="$work/obj/${s#"$root/"}.o"
    mkdir -p "$(dirname "$o")"
    "${cxx[@]}" "${flags[@]}" -c "$s" -o "$o"
    objs+=("$o")
  done
  "${cxx[@]}" "${flags[@]}" "${objs[@]}" "${libs[@]}" -o "$work/fuzz_$t"
done

for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t"
  regressions=()
  for f in "$root"/tests/data/fuzz_regressions/"$t"-*; do [[ -f "$f" ]] && regressions+=("$f"); done
  # Replay the committed crashers first: each must now run clean.
  if [[ ${#regressions[@]} -gt 0 ]] && ! "$work/fuzz_$t" "${regressions[@]}" >"$work/$t.replay.log" 2>&1; then
    echo "$t: a committed regression input fails again - see $work/$t.replay.log" >&2
    exit 1
  fi
  [[ "$seconds" == 0 ]] && continue
  echo "fuzzing $t for ${seconds}s" >&2
  set +e
  start=$SECONDS
  "$work/fuzz_$t" -max_total_time="$seconds" -runs="${OWLORE_FUZZ_RUNS:--1}" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$t-" "$work/corpus/$t" "$work/seeds/$t" >"$work/$t.log" 2>&1
  rc=$?
  set -e
  runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$work/$t.log" | tail -n 1 || true)"
  echo "$t: exit $rc after $((SECONDS - start)) s wall, ${runs:-no 'Done' line (crash?) - see $work/$t.log}"
done
