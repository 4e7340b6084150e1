#!/usr/bin/env bash
# Every method on SmolLM2-135M-Instruct (the GGUF) on GSM8K train, 16 x 512 tokens a step, the
# same data, seed, schedule and number of steps (STEPS, default 100) for all, each at a few
# peak learning rates (sampled and low-rank methods move fewer parameters per step and want a
# larger lr). Prints one line per run, then each method at its best lr (lowest final validation
# loss); every run's metrics in the results, the plot of the best runs where matplotlib is.
# Parts: the methods (default: full lisa ows owlore galore); LRS overrides every method's lrs.
# Run through tools/device/run.sh with the GGUF carried.
source tools/device/common.sh
parts_default "full lisa ows owlore galore"
need_gguf || exit 1
steps=${STEPS:-100}
flags() {
  case $1 in
    full) echo "--method full" ;;
    lisa) echo "--method lisa --gamma 2" ;;
    ows) echo "--method ows --gamma 5" ;;
    owlore) echo "--method owlore --gamma 5 --rank 128 --projector fast" ;;
    galore) echo "--method galore --rank 128 --projector fast" ;;
    *) echo "unknown method $1" >&2; return 1 ;;
  esac
}
lrs() {
  case $1 in
    full) echo "3e-5 1e-4" ;;
    lisa | ows) echo "1e-4 3e-4 1e-3" ;;
    *) echo "3e-4 1e-3" ;;
  esac
}
for m in $PARTS; do
  f=$(flags "$m") || continue
  for lr in ${LRS:-$(lrs "$m")}; do
    # shellcheck disable=SC2086  # f is a list of flags
    train "$m-$lr" 150 --model "$GGUF" --data data/gsm8k/train.jsonl --device cuda --steps "$steps" --batch 16 --seq 512 \
      --warmup 10 --val-every 20 --val-batches 8 --log-every 1000 --period 20 --outlier-samples 64 --outlier-seq 512 \
      --no-checkpoint --lr "$lr" $f > "$WORK/last.txt"
    head -1 "$WORK/last.txt"
  done
done
best=$(python3 - "$RESULTS" <<'PY'
import glob, json, os, sys
best = {}
for f in glob.glob(os.path.join(sys.argv[1], "*.metrics.jsonl")):
    name, lr = os.path.basename(f).split(".metrics")[0].split("-", 1)  # "full-3e-5": the lr has a dash
    vals = [json.loads(l)["val_loss"] for l in open(f) if '"val_loss"' in l]
    if vals and (name not in best or vals[-1] < best[name][1]):
        best[name] = (lr, vals[-1])
print(" ".join(f"{n}-{best[n][0]}" for n in ["full", "lisa", "ows", "owlore", "galore"] if n in best))
PY
)
echo "best lr per method: $best"
[ -n "$best" ] && plot methods.png "SmolLM2-135M-Instruct on GSM8K, $steps steps, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  $(for r in $best; do echo "$RESULTS/$r.metrics.jsonl"; done) --labels "$(echo $best | tr ' ' ',')"
exit $failed
