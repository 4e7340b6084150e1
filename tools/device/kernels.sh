#!/usr/bin/env bash
# The layer kernels (encoder, rmsnorm, residual, swiglu, rope, adamw, matmul, lm_head_ce) at
# SmolLM2-135M and LLaMA-2-7B shapes, 8192 tokens: tools/bench/bench_kernels.cu against the copy
# bandwidth and raw cuBLAS measured in the same run, then the same ops in eager PyTorch
# (tools/bench/bench_kernels_peer.py). Their correctness is gpu_tests. Parts (default all):
# bench peer. Run through tools/device/run.sh; docs/bench/kernels.md holds the last results.
source tools/device/common.sh
parts_default "bench peer"
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
if has bench; then
  timeout 200 "$BIN/bench_kernels" > "$RESULTS/bench_kernels.md" 2>&1
  status bench_kernels $?; cat "$RESULTS/bench_kernels.md"
fi
if has peer; then
  timeout 200 python3 tools/bench/bench_kernels_peer.py > "$RESULTS/peer.md" 2>&1
  status peer $?; cat "$RESULTS/peer.md"
fi
exit $failed
