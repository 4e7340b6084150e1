#!/bin/bash
# One device call for the attention kernels: build (if the carried binaries don't run), gtest,
# compute-sanitizer memcheck + racecheck on small shapes, benchmark, torch SDPA peer. Logs in $OUT.
# Binaries are prebuilt on the dev machine into build-attn/dev (carried); fallback builds here.
set -u
OUT=${OUT:-/tmp/attn_out}; mkdir -p "$OUT"
D=build-attn/dev
NVCC="nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 --expt-relaxed-constexpr -lineinfo -I src -I tests"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/smi.txt"
if ! "$D/test_attention_gpu" --gtest_list_tests > /dev/null 2>&1 || [ "${REBUILD:-0}" = 1 ]; then
  echo "building on the device (-j16 across the TUs)"
  ( g++ -O2 -std=c++17 -I $D/gtest/include -I $D/gtest -c $D/gtest/src/gtest-all.cc -o $D/gtest-all.o &&
    g++ -O2 -std=c++17 -I $D/gtest/include -c $D/gtest/src/gtest_main.cc -o $D/gtest_main.o ) &
  $NVCC -I $D/gtest/include -c tests/test_attention_gpu.cu -o $D/t.o &
  $NVCC -c src/kernels/ref/attention_ref.cpp -o $D/ref.o &
  $NVCC tools/bench_attention.cu src/kernels/ref/attention_ref.cpp -o $D/bench_attention &
  wait
  $NVCC $D/t.o $D/ref.o $D/gtest-all.o $D/gtest_main.o -o $D/test_attention_gpu -lpthread
fi
echo "== sass (HMMA / LDSM / local-memory instructions per kernel)"
cuobjdump -sass "$D/bench_attention" | grep -E "Function :|HMMA|LDSM|LDL|STL" | awk '/Function/{if(n)print n, "HMMA",h, "LDSM",l, "LDL",s, "STL",x; n=$3; h=0;l=0;s=0;x=0} /HMMA/{h++} /LDSM/{l++} /LDL/{s++} /STL/{x++} END{print n,"HMMA",h,"LDSM",l,"LDL",s,"STL",x}' | sed -E 's/_ZN6owlore16attention_detail[0-9]*//; s/EEEv[^ ]*//' | tee "$OUT/sass.txt"
echo "== gtest"
"$D/test_attention_gpu" 2>&1 | tee "$OUT/test.log" | grep -E "^\[|FAIL|rel error" | grep -v "^\[ RUN" | tail -40
echo "== memcheck (small shapes)"
{ compute-sanitizer --tool memcheck --leak-check no "$D/test_attention_gpu" --gtest_filter='*_small*' 2>&1 | tail -4
  echo "== racecheck (T 17, T 100)"
  compute-sanitizer --tool racecheck "$D/test_attention_gpu" --gtest_filter='*T17_H9x3*:*T100_H9x3*' 2>&1 | tail -4
} | tee "$OUT/sanitizer.log"
echo "== bench"
"$D/bench_attention" "$OUT/ours.jsonl" 2>&1 | tee "$OUT/bench.log"
echo "== peer"
PYTHONUNBUFFERED=1 python3 tools/bench_attention_peer.py --ours "$OUT/ours.jsonl" --commit "$(cat $D/COMMIT 2>/dev/null)" \
  --out "$OUT" 2>&1 | tee "$OUT/peer.log"
