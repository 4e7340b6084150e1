#!/usr/bin/env bash
# Device calls for the GPU trainer (staged by tools/stage_device.sh; logs and small results in $OUT).
# The first results (docs/bench/train-smollm2-h200-2026-11-28.md) came from these two modes.
#   check    GPU model/trainer tests, compute-sanitizer on the small ones, random HF fixture;
#            stores GGUF part 1 in /tmp for the next call
#   smollm2  joins the GGUF (sha256 checked); real fine-tuning run on GSM8K; PyTorch peer;
#            transformers loads our checkpoint; SmolLM2 HF fixture
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
export PYTHONUNBUFFERED=1
bash tools/device_unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "commit $(cat $BIN/COMMIT)" | tee -a "$OUT/card.txt"
case "${1:-check}" in
check)
  for t in test_model_gpu test_trainer_gpu; do
    echo "== $t"; timeout 300 $BIN/$t 2>&1 | tee "$OUT/$t.log" | grep -E "^\[  |Failure|rel error|error" | tail -25
  done
  echo "== compute-sanitizer memcheck (small shapes)"
  timeout 240 compute-sanitizer --tool memcheck $BIN/test_model_gpu --gtest_filter='*B1_T1*:*Frozen*' 2>&1 | tail -3 | tee "$OUT/memcheck.log"
  if [ -f tools/make_fixtures.py ]; then
    echo "== random HF fixture"
    timeout 200 python3 tools/make_fixtures.py --random /tmp/fixture_random 2>&1 | tail -5
    mkdir -p "$OUT/fixture_random"; cp /tmp/fixture_random/fixture.safetensors "$OUT/fixture_random/" 2>/dev/null
    cp /tmp/fixture_random/model/* "$OUT/fixture_random/" 2>/dev/null; ls -la "$OUT/fixture_random"
  fi
  ;;
smollm2)
  G=/tmp/smollm2.gguf  # joined and checked by device_unpack.sh
  STEPS=${STEPS:-300}
  echo "== main job: full fine-tuning of SmolLM2-135M-Instruct on GSM8K train"
  timeout 300 $BIN/owlore train --model $G --data data/gsm8k/train.jsonl --method full --device cuda \
    --steps $STEPS --batch 16 --seq 512 --lr 3e-5 --warmup 20 --val-every 50 --val-batches 8 --log-every 25 \
    --out /tmp/main 2>&1 | tee "$OUT/main_train.log" | grep -vE "^    layer [0-9]+ " | tail -60
  cp /tmp/main/metrics.jsonl "$OUT/main_metrics.jsonl" 2>/dev/null
  python3 tools/plot_metrics.py /tmp/main -o "$OUT/main_loss.png" --title "SmolLM2-135M-Instruct, GSM8K, full, $(head -1 $OUT/card.txt | cut -d, -f1)" 2>&1 | tail -1
  echo "== PyTorch peer (same shapes)"
  timeout 200 python3 tools/bench_train_peer.py --preset smollm2-135m --batch 16 --seq 512 2>&1 | tail -2 | tee "$OUT/peer.json"
  echo "== transformers loads our checkpoint"
  $BIN/owlore tokenize --model $G --data data/tinyshakespeare/input.txt -o /tmp/shake.tok
  ours=$($BIN/owlore eval --model /tmp/main/checkpoint --data /tmp/shake.tok --device cuda --seq 256 --batch 8 --max-batches 8 2>/dev/null)
  echo "owlore eval: $ours"
  loss=$(echo "$ours" | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['loss'])")
  timeout 120 python3 tools/check_hf_load.py /tmp/main/checkpoint /tmp/shake.tok --seq 256 --max-rows 64 --ours "$loss" 2>&1 | tail -1 | tee "$OUT/hf_load.json"
  if [ -f tools/make_fixtures.py ]; then
    echo "== SmolLM2 HF fixture"
    $BIN/owlore convert --model $G --out /tmp/smol_f32 --dtype f32
    timeout 200 python3 tools/make_fixtures.py --smollm2 /tmp/smol_f32 /tmp/fixture_smollm2 2>&1 | tail -3
    cp /tmp/fixture_smollm2/fixture.safetensors "$OUT/fixture_smollm2.safetensors" 2>/dev/null
  fi
  ;;
esac
ls -la "$OUT"
