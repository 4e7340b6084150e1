#!/usr/bin/env bash
# A short device check of the GPU trainer: its GPU tests and an owlore run's projector metrics.
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
bash tools/device_unpack.sh || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader; echo "commit $(cat $BIN/COMMIT)"
$BIN/test_trainer_gpu 2>&1 | grep -E "^\[  (PASSED|FAILED)|Failure"
$BIN/test_sampling_gpu 2>&1 | grep -E "^\[  (PASSED|FAILED)|Failure"
$BIN/owlore train --preset tiny-gpu --device cuda --method owlore --gamma 1 --period 5 --rank 8 --proj-gap 4 \
  --data data/tinyshakespeare/input.txt --steps 12 --batch 4 --seq 128 --val-every 0 --log-every 100 \
  --out /tmp/q > /dev/null 2>&1; echo "rc=$?"
grep -o '"projector_refreshes":[0-9]*\|"captured_energy_mean":[0-9.e-]*' /tmp/q/metrics.jsonl | head -6
