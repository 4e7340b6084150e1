#!/usr/bin/env bash
# Every GPU test binary at full shapes (a failing test's messages printed in full), then
# compute-sanitizer on the small shapes (OWLORE_SMALL_SHAPES=1 or a filter): memcheck on the
# kernel, outlier, GaLore, attention and model tests (the offload ring included), racecheck on
# the kernels with shared-memory reductions and on attention. Parts (default all): tests
# memcheck racecheck (each sanitizer run stops at 90 s; gpu_tests:tests for the tests alone).
# TESTS narrows the test binaries (TESTS="test_model_gpu test_trainer_gpu").
# Run through tools/device/run.sh; docs/bench/gpu-tests.md holds the last results.
source tools/device/common.sh
parts_default "tests memcheck racecheck"
if has tests; then
  for t in ${TESTS:-$(cd "$BIN" && ls test_*_gpu)}; do
    timeout 200 "$BIN/$t" > "$RESULTS/$t.log" 2>&1
    status "$t" $?
    grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?[,.]' "$RESULTS/$t.log" | sed 's/^/  /'
    grep -B2 -A8 -E 'Failure$|^\[  FAILED  \] [A-Za-z]' "$RESULTS/$t.log" | head -80
  done
fi
# sanitize TOOL NAME BINARY [gtest flags]: the sanitizer's verdict line (ERROR SUMMARY / hazards).
sanitize() {
  local tool=$1 name=$2 bin=$3; shift 3
  local opts=(--tool "$tool"); [ "$tool" = memcheck ] && opts+=(--leak-check no)
  timeout 90 compute-sanitizer "${opts[@]}" "$BIN/$bin" "$@" > "$RESULTS/$tool-$name.log" 2>&1
  status "$tool $name" $?
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) +\] [0-9]' "$RESULTS/$tool-$name.log" | sed 's/^/  /'
}
if has memcheck; then
  for t in test_encoder_gpu test_rmsnorm_gpu test_elementwise_gpu test_adamw_gpu test_matmul_gpu test_outliers_gpu; do
    OWLORE_SMALL_SHAPES=1 sanitize memcheck "$t" "$t"
  done
  sanitize memcheck attention test_attention_gpu --gtest_filter='*_small*'
  OWLORE_SMALL_SHAPES=1 sanitize memcheck galore test_galore_gpu --gtest_filter='-*ModelShapes*'
  sanitize memcheck model test_model_gpu --gtest_filter='*B1_T1*:*Frozen*:*Offload*'
fi
if has racecheck; then
  OWLORE_SMALL_SHAPES=1 sanitize racecheck rmsnorm test_rmsnorm_gpu
  OWLORE_SMALL_SHAPES=1 sanitize racecheck encoder test_encoder_gpu
  OWLORE_SMALL_SHAPES=1 sanitize racecheck adamw test_adamw_gpu --gtest_filter='AdamwGpu.SumSquares*'
  OWLORE_SMALL_SHAPES=1 sanitize racecheck lm_head test_matmul_gpu --gtest_filter='LmHeadCeGpu*'
  sanitize racecheck attention test_attention_gpu --gtest_filter='*T17_H9x3*:*T100_H9x3*'
fi
exit $failed
