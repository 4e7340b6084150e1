#!/usr/bin/env bash
# The main job: install what the build needs, fetch the default model (SmolLM2-135M-Instruct,
# GGUF), build, fine-tune it on the bundled GSM8K train set, and plot the loss.
#   with a GPU:    OwLore on the GPU (5 of 30 layers sampled by their outlier ratios every 20
#                  steps, GaLore rank 128 with the fast projector), 16 x 512 tokens per step,
#                  300 steps (about 10 s of training on an H200), checkpoint in runs/main/checkpoint
#   without a GPU: OwLore on the tiny preset on Tiny Shakespeare on the CPU (the trainer's CPU twin)
# Extra arguments go to `owlore train` (e.g. --steps 1000 --method lisa --gamma 2).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
model=$(tools/fetch_smollm2.sh | tail -n 1)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target owlore
if nvidia-smi -L >/dev/null 2>&1; then
  build/owlore train --model "$model" --data data/gsm8k/train.jsonl --device cuda \
    --method owlore --gamma 5 --period 20 --rank 128 --projector fast --lr 1e-3 \
    --steps 300 --batch 16 --seq 512 --warmup 20 --val-every 50 --val-batches 8 --out runs/main "$@"
else
  echo "no GPU found: training the tiny preset on the CPU instead"
  build/owlore train --preset tiny --device cpu --data data/tinyshakespeare/input.txt \
    --method owlore --gamma 1 --period 20 --rank 8 --lr 3e-3 --steps 300 --out runs/main "$@"
fi
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib
python3 tools/plot_metrics.py runs/main -o runs/main/loss.png
