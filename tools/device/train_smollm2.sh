#!/usr/bin/env bash
# Fine-tuning SmolLM2-135M-Instruct (the GGUF) on GSM8K train, 16 x 512 tokens a step. Parts
# (default all):
#   main      the main job: tools/main_job.sh's GPU command (its flags printed by the script)
#   full      full fine-tuning, 300 steps, lr 3e-5
#   peer      the PyTorch peer of full fine-tuning (tools/bench/bench_train_peer.py)
#   hf-load   transformers loads the full run's checkpoint; its loss on Tiny Shakespeare beside
#             owlore eval's (tools/ref/check_hf_load.py)
#   recompute SmolLM2's shape with fresh weights on Tiny Shakespeare bytes, 30 steps of full
#             fine-tuning at each --recompute level (no GGUF needed)
# Run through tools/device/run.sh (main, full and hf-load need the GGUF carried).
source tools/device/common.sh
parts_default "main full peer hf-load recompute"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if has main && need_gguf; then
  mapfile -t main < <(OWLORE_MAIN_JOB_PRINT=1 bash tools/main_job.sh --device cuda --model "$GGUF" --out "$WORK/main")
  echo "main job: owlore train ${main[*]}"
  train main 300 "${main[@]}"
  grep -E "^  layer +[0-9]+ +D" "$RESULTS/main.log" | head -40
  plot main_loss.png "SmolLM2-135M-Instruct, GSM8K, main job (owlore), $card" "$WORK/main"
fi
if has full && need_gguf; then
  train full 300 --model "$GGUF" --data data/gsm8k/train.jsonl --method full --device cuda --steps 300 --batch 16 \
    --seq 512 --lr 3e-5 --warmup 20 --val-every 50 --val-batches 8 --log-every 25
  plot full_loss.png "SmolLM2-135M-Instruct, GSM8K, full, $card" "$WORK/full"
fi
has peer && peer peer-smollm2-full 200 --preset smollm2-135m --batch 16 --seq 512
if has hf-load && need_gguf; then
  if [ ! -d "$WORK/full/checkpoint" ]; then
    echo "hf-load: no checkpoint of the full run (the part full runs first)"
  else
    "$BIN/owlore" tokenize --model "$GGUF" --data data/tinyshakespeare/input.txt -o "$WORK/shake.tok" > /dev/null
    ours=$("$BIN/owlore" eval --model "$WORK/full/checkpoint" --data "$WORK/shake.tok" --device cuda --seq 256 --batch 8 \
      --max-batches 8 2> "$RESULTS/eval.err")
    echo "owlore eval: $ours"
    loss=$(echo "$ours" | python3 -c "import json, sys; print(json.loads(sys.stdin.read())['loss'])")
    timeout 200 python3 tools/ref/check_hf_load.py "$WORK/full/checkpoint" "$WORK/shake.tok" --seq 256 --max-rows 64 \
      --ours "$loss" > "$RESULTS/hf_load.out" 2> "$RESULTS/hf_load.err"
    status check_hf_load $?; tail -1 "$RESULTS/hf_load.out"
  fi
fi
if has recompute; then
  for level in none cheap layer; do
    train recompute-$level 200 --preset smollm2-135m --data data/tinyshakespeare/input.txt --device cuda --steps 30 \
      --batch 16 --seq 512 --val-every 0 --val-batches 1 --log-every 1000 --no-checkpoint --recompute $level
  done
fi
exit $failed
