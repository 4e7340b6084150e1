#!/usr/bin/env bash
# Builds here (sm_90) and stages what a device call carries in .carry/ (git-ignored): the owlore
# binary and the GPU test binaries (they link only libcudart/cuBLASLt/cuSOLVER dynamically and
# run on the device machine), plus the SmolLM2 GGUF split in two parts (one call carries at most
# 64 MiB; the device joins them and checks the sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
ninja -C build owlore $(cd build && ninja -t targets all | grep -oE '^tests/test_[a-z0-9_]+_gpu:' | tr -d ':') >/dev/null
rm -rf .carry/bin && mkdir -p .carry/bin .carry/gguf1 .carry/gguf2
cp build/owlore .carry/bin/
# The model and trainer GPU tests (the kernel tests travel with tools/device_kernels.sh).
cp build/tests/test_model_gpu build/tests/test_trainer_gpu .carry/bin/
git rev-parse --short HEAD > .carry/bin/COMMIT
gguf=${OWLORE_GGUF:-$HOME/.cache/owlore/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$gguf" ]; then
  head -c $((44 * 1024 * 1024)) "$gguf" > .carry/gguf1/part1
  tail -c +$((44 * 1024 * 1024 + 1)) "$gguf" > .carry/gguf2/part2
  sha256sum "$gguf" | cut -d' ' -f1 > .carry/gguf2/sha256
fi
du -sh .carry/*
