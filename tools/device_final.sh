#!/usr/bin/env bash
# Two device calls (staged by tools/stage_device.sh; small results in $OUT):
#   gpu       every GPU test binary carried in .carry/bin, compute-sanitizer memcheck on small
#             shapes, Nsight Compute on one training step selected by NVTX; stores GGUF part 1
#   methods   SmolLM2-135M-Instruct on GSM8K, 16 x 512 tokens, equal steps for every method
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
export PYTHONUNBUFFERED=1
bash tools/device_unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "commit $(cat $BIN/COMMIT)" | tee -a "$OUT/card.txt"
case "${1:-gpu}" in
gpu)
  echo "== random HF fixture with PyTorch's bf16 errors (test_fixtures_gpu reads it)"
  timeout 120 python3 tools/make_fixtures.py --random tests/data/fixtures/random 2>&1 | tail -4
  cp tests/data/fixtures/random/fixture.safetensors "$OUT/fixture_random.safetensors"
  for t in $BIN/test_*_gpu; do
    echo "== $(basename $t)"
    mkdir -p /tmp/logs; small=1; [ "$(basename $t)" = test_galore_gpu ] && small=0  # kernels' full shapes ran in their own calls
    OWLORE_SMALL_SHAPES=$small timeout 150 $t 2>&1 | tee "/tmp/logs/$(basename $t).log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure|rel error|refresh|ms" | tail -20
  done
  echo "== compute-sanitizer memcheck (small shapes)"
  timeout 200 compute-sanitizer --tool memcheck $BIN/test_model_gpu --gtest_filter='*B1_T1*:*Frozen*' 2>&1 | tail -2
  echo "== Nsight Compute: the kernels of training step 3, selected by its NVTX range"
  timeout 200 ncu --clock-control none --profile-from-start off --nvtx --nvtx-include "step 3/" \
    --print-summary per-kernel --csv \
    $BIN/owlore train --preset tiny-gpu --device cuda --data data/tinyshakespeare/input.txt --steps 3 \
    --profile-steps 3:3 --batch 4 --seq 256 --val-every 0 --out /tmp/prof > "$OUT/ncu_step3.csv" 2> "$OUT/ncu.err"
  echo "ncu rc=$? lines=$(wc -l < $OUT/ncu_step3.csv)"; tail -3 "$OUT/ncu.err"; head -c 1500 "$OUT/ncu_step3.csv"; echo
  tar -C /tmp -cf "$OUT/gpu_test_logs.tar" logs
  ;;
methods)
  G=/tmp/smollm2.gguf
  STEPS=${STEPS:-100}
  common="--model $G --data data/gsm8k/train.jsonl --device cuda --steps $STEPS --batch 16 --seq 512 --lr 3e-5 \
    --warmup 10 --val-every 25 --val-batches 8 --log-every 1000 --period 25 --outlier-samples 64 --outlier-seq 512"
  run() {  # name, extra flags
    local name=$1; shift
    echo "== $name: $*"
    timeout 150 $BIN/owlore train $common --out /tmp/$name "$@" > "/tmp/$name.log" 2>&1
    echo "rc=$?"; grep -E "^done|training layers|error" "/tmp/$name.log" | head -3
    mkdir -p /tmp/metrics; cp /tmp/$name/metrics.jsonl /tmp/metrics/$name.metrics.jsonl 2>/dev/null
    grep -E "^done" "/tmp/$name.log" | sed "s/^/$name: /" >> "$OUT/summary.txt"
  }
  run full --method full
  run full-lowmem --method full --recompute cheap --moments bf16
  run full-frozen-emb --method full --freeze-embeddings
  run lisa --method lisa --gamma 2
  run ows --method ows --gamma 5
  run owlore --method owlore --gamma 5 --rank 128 --projector fast
  run galore --method galore --rank 128 --projector fast
  grep -h "layerwise\|  layer" /tmp/ows.log | head -32 > "$OUT/ows_outliers.txt"
  tar -C /tmp -cf "$OUT/methods_metrics.tar" metrics
  python3 tools/plot_metrics.py /tmp/full /tmp/lisa /tmp/ows /tmp/owlore /tmp/galore -o "$OUT/methods.png" \
    --labels full,lisa,ows,owlore,galore --title "SmolLM2-135M-Instruct on GSM8K, $STEPS steps, $(head -1 $OUT/card.txt | cut -d, -f1)" | tail -1
  ;;
esac
ls -la "$OUT"
