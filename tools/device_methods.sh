#!/usr/bin/env bash
# Fine-tuning SmolLM2-135M-Instruct (the GGUF, joined by tools/device_unpack.sh) on GSM8K train
# (the trainer holds out a validation split of it), 16 x 512 tokens per step, the same number of
# steps for every method: full, lisa, ows, owlore, galore, each at two peak learning rates (a
# small sweep: sampled and low-rank methods move fewer parameters per step and want a larger lr).
# Writes $OUT/summary.txt (one line per run), $OUT/methods.png (each method at its best lr) and
# $OUT/methods_metrics.tar (every metrics.jsonl).
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT"
BIN=.carry/bin
bash tools/device_unpack.sh || exit 1
G=/tmp/smollm2.gguf
STEPS=${STEPS:-100}
S=$OUT/summary.txt
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $(cat $BIN/COMMIT)"; date -u; } >> $S
common="--model $G --data data/gsm8k/train.jsonl --device cuda --steps $STEPS --batch 16 --seq 512 --warmup 10 \
  --val-every 20 --val-batches 8 --log-every 1000 --period 20 --outlier-samples 64 --outlier-seq 512 --no-checkpoint"
mkdir -p /tmp/metrics
run() {  # name, lr, extra flags
  local name=$1 lr=$2; shift 2
  timeout 100 $BIN/owlore train $common --lr $lr --out /tmp/$name-$lr "$@" > /tmp/$name-$lr.log 2>&1
  echo "$name lr $lr rc=$? $*: $(grep -E '^done|error' /tmp/$name-$lr.log | head -1)" >> $S
  cp /tmp/$name-$lr/metrics.jsonl /tmp/metrics/$name-$lr.metrics.jsonl 2>/dev/null
}
# METHODS picks the methods, LRS the learning rates (default: each method's usual pair).
flags() {
  case $1 in
    full) echo "--method full" ;;
    lisa) echo "--method lisa --gamma 2" ;;
    ows) echo "--method ows --gamma 5" ;;
    owlore) echo "--method owlore --gamma 5 --rank 128 --projector fast" ;;
    galore) echo "--method galore --rank 128 --projector fast" ;;
  esac
}
for m in ${METHODS:-full lisa ows owlore galore}; do
  if [ "$m" = full ]; then lrs=${LRS:-3e-5 1e-4}; else lrs=${LRS:-1e-4 3e-4}; fi
  for lr in $lrs; do run $m $lr $(flags $m); done
done
# The exact SVD must capture at least the fast projector's energy on the same gradients (step 1).
if [ -n "${ENERGY:-}" ]; then
  for p in exact fast; do
    timeout 120 $BIN/owlore train --model $G --data data/gsm8k/train.jsonl --device cuda --method galore --rank 128 \
      --projector $p --steps 1 --batch 2 --seq 256 --val-every 0 --no-checkpoint --out /tmp/energy-$p > /tmp/energy-$p.log 2>&1
    echo "energy $p rc=$?: $(grep -o '"captured_energy_m[a-z]*":[0-9.e-]*' /tmp/energy-$p/metrics.jsonl | tr '\n' ' ')" >> $S
  done
fi
tar -C /tmp -cf "$OUT/methods_metrics.tar" metrics
# Each method at the lr with the lowest final validation loss.
best=$(python3 - <<'PY'
import glob, json, os
best = {}
for f in glob.glob("/tmp/metrics/*.metrics.jsonl"):
    name, lr = os.path.basename(f).split(".metrics")[0].split("-", 1)  # "full-3e-5": the lr has a dash
    vals = [json.loads(l)["val_loss"] for l in open(f) if '"val_loss"' in l]
    if vals and (name not in best or vals[-1] < best[name][1]): best[name] = (lr, vals[-1])
print(" ".join(f"/tmp/{n}-{best[n][0]}" for n in ["full", "lisa", "ows", "owlore", "galore"] if n in best))
PY
)
echo "best: $best" >> $S
python3 tools/plot_metrics.py $best -o "$OUT/methods.png" --labels "$(echo $best | tr ' ' '\n' | sed 's|/tmp/||' | paste -sd, -)" \
  --title "SmolLM2-135M-Instruct on GSM8K, $STEPS steps, $(nvidia-smi --query-gpu=name --format=csv,noheader)" >> $S 2>&1
