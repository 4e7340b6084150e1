#!/usr/bin/env bash
# Here, before device calls (tools/device/run.sh says how to call): builds with CMake the owlore
# binary, every GPU test and the benchmarks (sm_90 by default), and packs into .carry/ (ignored
# by git) what the calls carry, within a call's 64 MiB beside the working tree:
#   .carry/bin/bins.tar.xz   the binaries, stripped (they link only the CUDA libraries dynamically),
#                            COMMIT (HEAD, "+dirty" when sources differ from it) and SOURCE_DIR
#   .carry/gguf1/part1       the SmolLM2 GGUF xz-compressed (once, cached beside the GGUF) in two
#   .carry/gguf2/part2       parts that leave both calls the same room to spare, and its sha256
# OWLORE_BUILD_DIR (default build), OWLORE_JOBS (default nproc), OWLORE_GGUF (default the
# fetched ~/.cache/owlore/SmolLM2-135M-Instruct.Q4_1.gguf; absent: no GGUF parts).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${OWLORE_BUILD_DIR:-build}
limit=$((64 * 1024 * 1024))
spare=""
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
gpu_tests=$(ls tests/test_*_gpu.cpp tests/test_*_gpu.cu | xargs -n1 basename | sed 's/\.[^.]*$//')
benches="bench_kernels bench_attention bench_refresh probe_memory"
# shellcheck disable=SC2086  # word lists
cmake --build "$build" -j "${OWLORE_JOBS:-$(nproc)}" --target owlore $gpu_tests $benches

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$build/owlore" "$stage/"
for t in $gpu_tests; do cp "$build/tests/$t" "$stage/"; done
for b in $benches; do cp "$build/tools/bench/$b" "$stage/"; done
strip "$stage"/*
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src tests tools CMakeLists.txt || commit="$commit+dirty"
echo "$commit" > "$stage/COMMIT"
grep -m1 '^CMAKE_HOME_DIRECTORY:' "$build/CMakeCache.txt" | cut -d= -f2- > "$stage/SOURCE_DIR"
rm -rf .carry/bin && mkdir -p .carry/bin
tar -cJf .carry/bin/bins.tar.xz -C "$stage" .

# What travels with every call: tracked files and untracked ones git does not ignore.
tree=$( (git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
bins=$(stat -c %s .carry/bin/bins.tar.xz)
gguf=${OWLORE_GGUF:-$HOME/.cache/owlore/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$gguf" ]; then
  if [ ! -f "$gguf.xz" ] || [ "$gguf.xz" -ot "$gguf" ]; then
    echo "compressing $gguf (once; minutes)"
    xz -6 -T0 -c "$gguf" > "$gguf.xz.partial" && mv "$gguf.xz.partial" "$gguf.xz"
  fi
  size=$(stat -c %s "$gguf.xz")
  # Both calls keep the same room to spare (for files added before a call).
  spare=$(((2 * limit - 2 * tree - bins - size) / 2))
  if [ $spare -lt $((1024 * 1024)) ]; then
    echo "error: the GGUF ($size B compressed) does not fit in two calls beside a tree of $tree B and binaries of $bins B" >&2
    exit 1
  fi
  first=$((limit - tree - bins - spare))
  rm -rf .carry/gguf1 .carry/gguf2 && mkdir -p .carry/gguf1 .carry/gguf2
  head -c "$first" "$gguf.xz" > .carry/gguf1/part1
  tail -c +$((first + 1)) "$gguf.xz" > .carry/gguf2/part2
  sha256sum "$gguf" | cut -d' ' -f1 > .carry/gguf2/sha256
fi
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "commit $commit; each call carries the tree ($(mib "$tree")) and:"
echo "  .carry/bin                $(mib "$bins")"
[ -d .carry/gguf1 ] && echo "  .carry/gguf1 (1st call)   $(mib "$(stat -c %s .carry/gguf1/part1)")" &&
  echo "  .carry/gguf2 (2nd call)   $(mib "$(stat -c %s .carry/gguf2/part2)")"
echo "limit per call: 64 MiB${spare:+; $(mib "$spare") to spare in each call}"
