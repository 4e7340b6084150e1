#!/usr/bin/env bash
# The GaLore projector refresh at one LLaMA-2-7B MLP gradient (4096 x 11008 and its transpose,
# rank 256): exact (cuSOLVER gesvd), fast cold and fast warm, with captured energies and where
# the warm refresh's time goes, against the fp32 GEMM rate measured in the same run
# (tools/bench/bench_refresh.cu). ARGS passes flags to bench_refresh (--rank 128 ...).
# Run through tools/device/run.sh.
source tools/device/common.sh
timeout 300 "$BIN/bench_refresh" ${ARGS:-} > "$RESULTS/bench_refresh.md" 2>&1
status bench_refresh $?; cat "$RESULTS/bench_refresh.md"
exit $failed
