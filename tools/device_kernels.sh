#!/bin/bash
# One device call for the layer kernels (encoder, rmsnorm, residual, swiglu, rope, adamw, matmul,
# lm_head_ce): build (if the carried binaries don't run there), gtest on every GPU test,
# compute-sanitizer memcheck + racecheck on small shapes (OWLORE_SMALL_SHAPES=1), benchmark,
# PyTorch peer, and a CMake/ctest attempt last. Logs in $OUT.
# Prebuild here (no GPU needed):  BUILD_ONLY=1 tools/device_kernels.sh   (carry build-kern/dev)
set -u
OUT=${OUT:-/tmp/kern_out}; mkdir -p "$OUT"
D=build-kern/dev
G=$D/gtest
NVCC="nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 --expt-relaxed-constexpr -lineinfo -I src -I tests"
TESTS="encoder rmsnorm elementwise adamw matmul"

build() {
  mkdir -p $D
  [ -d $G ] || cp -r /usr/src/googletest/googletest $G
  ( g++ -O2 -std=c++17 -I $G/include -I $G -c $G/src/gtest-all.cc -o $D/gtest-all.o &&
    g++ -O2 -std=c++17 -I $G/include -c $G/src/gtest_main.cc -o $D/gtest_main.o ) &
  for t in $TESTS; do $NVCC -I $G/include -c tests/test_${t}_gpu.cu -o $D/test_$t.o & done
  $NVCC -c src/kernels/kernels_odr_check.cu -o $D/odr.o &
  for r in encoder rmsnorm residual swiglu rope adamw matmul lm_head_ce; do
    g++ -O2 -std=c++17 -I src -c src/kernels/ref/${r}_ref.cpp -o $D/ref_$r.o & done
  $NVCC -I tools tools/bench_kernels.cu -o $D/bench_kernels -lcublasLt -lcublas &
  wait
  $NVCC $D/test_*.o $D/odr.o $D/ref_*.o $D/gtest-all.o $D/gtest_main.o -o $D/test_kernels_gpu -lcublasLt -lpthread
  git rev-parse --short HEAD > $D/COMMIT
}

if [ "${BUILD_ONLY:-0}" = 1 ]; then build; ls -la $D; exit; fi

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/smi.txt"
if ! "$D/test_kernels_gpu" --gtest_list_tests > /dev/null 2>&1 || ! ldd "$D/bench_kernels" > /dev/null 2>&1 ||
   ldd "$D/bench_kernels" | grep -q "not found" || [ "${REBUILD:-0}" = 1 ]; then
  echo "building on the device"; time build 2>&1 | tail -5
fi
echo "commit $(cat $D/COMMIT 2>/dev/null)"
if [ "${SKIP_TEST:-0}" != 1 ]; then
echo "== gtest (all shapes)"
timeout ${T_TEST:-150} "$D/test_kernels_gpu" 2>&1 | tee "$OUT/test.log" | grep -E "^\[  |FAIL|rel|Failure|error" | grep -v "RUN  " | tail -60
fi
echo "== bench"
timeout ${T_BENCH:-100} "$D/bench_kernels" 2>&1 | tee "$OUT/bench.log"
if [ "${SKIP_PEER:-0}" != 1 ]; then
echo "== peer"
PYTHONUNBUFFERED=1 timeout ${T_PEER:-100} python3 tools/bench_kernels_peer.py 2>&1 | tee "$OUT/peer.log"
fi
if [ "${SKIP_SAN:-0}" != 1 ]; then
echo "== sanitizer (small shapes)"
{ echo "-- memcheck"; OWLORE_SMALL_SHAPES=1 timeout ${T_MEM:-90} compute-sanitizer --tool memcheck --leak-check no \
    "$D/test_kernels_gpu" 2>&1 | tail -6
  echo "-- racecheck"; OWLORE_SMALL_SHAPES=1 timeout ${T_RACE:-60} compute-sanitizer --tool racecheck \
    "$D/test_kernels_gpu" --gtest_filter='Rmsnorm*:Encoder*:AdamwGpu.SumSquares*:LmHead*' 2>&1 | tail -6
} | tee "$OUT/sanitizer.log"
fi
if [ "${TRY_CMAKE:-0}" = 1 ]; then
  echo "== cmake + ctest -L gpu"
  { timeout 60 cmake -S . -B build-kern/cm -G Ninja && timeout ${T_NINJA:-120} ninja -C build-kern/cm -j16 \
      test_encoder_gpu test_rmsnorm_gpu test_elementwise_gpu test_adamw_gpu test_matmul_gpu &&
    (cd build-kern/cm && timeout 100 ctest -L gpu -R 'Gpu\.' -E Attention --output-on-failure); } 2>&1 | tail -30 | tee "$OUT/cmake.log"
fi
