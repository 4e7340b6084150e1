#!/usr/bin/env bash
# Builds everything and runs every test. CPU tests run everywhere; GPU tests (label gpu) skip
# with a message where no GPU is present. Extra arguments go to ctest (e.g. -L gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${OWLORE_BUILD_DIR:-build}
jobs=${OWLORE_JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "note: no GPU on this machine: the GPU tests (ctest label gpu) skip, each saying so in its output"
fi
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
