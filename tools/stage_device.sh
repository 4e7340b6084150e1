#!/usr/bin/env bash
# Builds here (sm_90) and stages what device calls carry in .carry/ (git-ignored), compressed to
# fit a call's 64 MiB: .carry/bin/bins.tar.xz (the owlore binary and every GPU test binary,
# stripped; they link only the CUDA libraries dynamically and run on the device machine), and
# the SmolLM2 GGUF xz-compressed in two parts (.carry/gguf1, .carry/gguf2) with its sha256.
# On the device: tools/device_unpack.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# The benchmarks are outside the default target (tools/ is EXCLUDE_FROM_ALL): build them too, or a
# stale copy would be shipped.
ninja -C build all bench_refresh bench_kernels bench_attention probe_memory >/dev/null
rm -rf .carry/bin /tmp/owlore_stage && mkdir -p .carry/bin .carry/gguf1 .carry/gguf2 /tmp/owlore_stage
cp build/owlore build/tests/test_*_gpu /tmp/owlore_stage/
cp build/tools/bench_refresh build/tools/bench_kernels build/tools/bench_attention build/tools/probe_memory /tmp/owlore_stage/
strip /tmp/owlore_stage/*
git rev-parse --short HEAD > /tmp/owlore_stage/COMMIT
tar -cJf .carry/bin/bins.tar.xz -C /tmp/owlore_stage .
gguf=${OWLORE_GGUF:-$HOME/.cache/owlore/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$gguf" ] && [ ! -f .carry/gguf2/part2 ]; then
  xz -6 -T2 -c "$gguf" > /tmp/owlore_stage/gguf.xz
  half=$(( $(stat -c %s /tmp/owlore_stage/gguf.xz) / 2 ))
  head -c $half /tmp/owlore_stage/gguf.xz > .carry/gguf1/part1
  tail -c +$((half + 1)) /tmp/owlore_stage/gguf.xz > .carry/gguf2/part2
  sha256sum "$gguf" | cut -d' ' -f1 > .carry/gguf2/sha256
fi
du -sh .carry/*
