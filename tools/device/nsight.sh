#!/usr/bin/env bash
# Nsight Compute on the kernels of one training step, selected by its NVTX range: the command
# README.md gives (tiny-gpu preset, step 3), per-kernel summary as CSV. Run through
# tools/device/run.sh.
source tools/device/common.sh
timeout 300 ncu --clock-control none --profile-from-start off --nvtx --nvtx-include "step 3/" \
  --print-summary per-kernel --csv \
  "$BIN/owlore" train --preset tiny-gpu --device cuda --data data/tinyshakespeare/input.txt --steps 3 \
  --profile-steps 3:3 --batch 4 --seq 256 --val-every 0 --no-checkpoint --out "$WORK/prof" > "$RESULTS/ncu_step3.csv" 2> "$RESULTS/ncu.err"
status ncu $?; echo "$(wc -l < "$RESULTS/ncu_step3.csv") lines of CSV"
tail -3 "$RESULTS/ncu.err"
head -c 2000 "$RESULTS/ncu_step3.csv"; echo
exit $failed
