#!/usr/bin/env bash
# One device call: the GPU model tests (recompute levels included), then SmolLM2-135M's shape
# (fresh weights, byte-level Tiny Shakespeare) at 16 x 512 tokens with each --recompute level:
# tokens/s and peak memory. Results in $OUT/recompute.txt.
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
bash tools/device_unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/recompute.txt"
echo "commit $(cat $BIN/COMMIT)" | tee -a "$OUT/recompute.txt"
$BIN/test_model_gpu 2>&1 | grep -E "^\[  (PASSED|FAILED)|Failure|rel" | tee -a "$OUT/recompute.txt"
for level in none cheap layer; do
  $BIN/owlore train --preset smollm2-135m --data data/tinyshakespeare/input.txt --device cuda --steps 30 \
    --batch 16 --seq 512 --val-every 0 --val-batches 1 --log-every 1000 --recompute $level --out /tmp/r_$level 2>&1 |
    grep -E "^done|  activations|  total|error" | sed "s/^/$level: /" | tee -a "$OUT/recompute.txt"
done
