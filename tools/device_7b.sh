#!/usr/bin/env bash
# LLaMA-2-7B shapes with random weights (no checkpoint is needed for speed and memory), batch
# 16 x 512, on one GPU: owlore lisa (gamma 2, fp32 and bf16 moments), owlore owlore with the
# OwLore reference config (gamma 5, K 50, r 256, T 100, alpha 1), with and without
# --freeze-embeddings, beside the PyTorch LISA peer (transformers + LISA freezing + torch AdamW +
# gradient checkpointing) in the same call. Staged by tools/stage_device.sh; results in $OUT.
# RUNS picks which (default all): lisa-fp32 lisa-bf16 owlore owlore-frozen-emb peer-lisa.
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
export PYTHONUNBUFFERED=1
bash tools/device_unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/7b.txt"
echo "commit $(cat $BIN/COMMIT)" | tee -a "$OUT/7b.txt"
STEPS=${STEPS:-12}
common="--preset llama2-7b --data data/tinyshakespeare/input.txt --device cuda --steps $STEPS --batch 16 --seq 512 \
  --val-every 0 --val-batches 1 --log-every 1000 --no-checkpoint --recompute ${RECOMPUTE:-layer}"
RUNS=${RUNS:-lisa-fp32 lisa-bf16 owlore owlore-frozen-emb peer-lisa}
run() {
  local name=$1; shift
  [[ " $RUNS " == *" $name "* ]] || return 0
  timeout 280 $BIN/owlore train $common --out /tmp/$name "$@" > /tmp/$name.log 2>&1
  echo "$name rc=$?: $(grep -E '^done|error' /tmp/$name.log | head -1)" | tee -a "$OUT/7b.txt"
  grep -E "^  (weights|optimizer state|gradients|activations|workspace|total) " /tmp/$name.log | sed "s/^/  $name /" >> "$OUT/7b.txt"
}
run lisa-fp32 --method lisa --gamma 2 --period 5 --moments fp32
run lisa-bf16 --method lisa --gamma 2 --period 5 --moments bf16
run owlore --method owlore --gamma 5 --period 50 --rank 256 --proj-gap 100 --galore-scale 1 --projector fast \
  --outlier-samples 16 --outlier-seq 512
run owlore-frozen-emb --method owlore --gamma 5 --period 50 --rank 256 --proj-gap 100 --projector fast \
  --outlier-samples 16 --outlier-seq 512 --freeze-embeddings
[[ " $RUNS " == *" peer-lisa "* ]] && timeout 280 python3 tools/bench_train_peer.py --preset llama2-7b --batch 16 --seq 512 --lisa-gamma 2 --lisa-period 5 \
  --grad-ckpt --steps 6 --warmup 2 2>&1 | tail -1 | tee -a "$OUT/7b.txt"
