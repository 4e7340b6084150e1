#!/usr/bin/env bash
# One device call for the GaLore issue: every GPU test (failures in full), the projector refresh
# benchmark, LLaMA-2-7B shapes (random weights, 16 x 512) with owlore lisa and owlore owlore (the
# OwLore reference config, with and without --freeze-embeddings) beside the PyTorch GaLore/OwLore
# peer, and SmolLM2-135M shapes owlore gamma 5 r 128 beside its peer. Staged by
# tools/stage_device.sh; logs and a summary in $OUT. PARTS picks sections (default all):
# tests (GPU tests; TESTS narrows them), refresh (bench_refresh), 7b (7B lisa and owlore, layer inputs
# offloaded and not), 7b-refresh (7B owlore re-sampling at step 7: a refresh on a warm step), lisa-more (7B LISA fp32
# moments and frozen embeddings, SmolLM2 lisa/ows with and without frozen embeddings), 7b-kept (7B owlore without offload), peer-lisa, peer-owlore (the 7B peers),
# small (SmolLM2 shapes and their peer), 7b-lisa and 7b-owlore (the offloaded LISA run, the three OwLore runs of 7b), probe (what the
# device holds outside the memory plan: tools/probe_memory.cu, with cuBLAS workspace settings).
set -u
OUT=${OUT:-/tmp/owlore_out}; mkdir -p "$OUT/logs"
trap 'tar -C $OUT -cf $OUT/logs.tar logs && rm -rf $OUT/logs' EXIT  # a call returns at most 8 files
BIN=.carry/bin
export PYTHONUNBUFFERED=1
bash tools/device_unpack.sh || exit 1
S=$OUT/summary.txt
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $(cat $BIN/COMMIT)"; date -u; } | tee $S
PARTS=${PARTS:-tests refresh 7b 7b-kept peer-lisa peer-owlore small}
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has tests; then
for t in ${TESTS:-$BIN/test_*_gpu}; do
  timeout 150 $t > $OUT/logs/$(basename $t).log 2>&1
  echo "$(basename $t): $(grep -E '^\[  (PASSED|FAILED) ' $OUT/logs/$(basename $t).log | tr '\n' ' ')" | tee -a $S
done
fi
if has refresh; then
[ -x $BIN/bench_refresh ] && timeout 120 $BIN/bench_refresh > $OUT/logs/bench_refresh.txt 2>&1; tail -25 $OUT/logs/bench_refresh.txt >> $S
fi
STEPS=8
# Step times from metrics.jsonl: refresh steps vs the median of the others.
summarize() {
  python3 - "$1" "$2" <<'PY' | tee -a $S
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tokens = 16 * 512
by_step = {r["step"]: r for r in rows if "tokens_per_s" in r}
t = {s: tokens / r["tokens_per_s"] for s, r in by_step.items()}
refresh = [s for s, r in by_step.items() if r.get("projector_refreshes")]
steady = statistics.median([v for s, v in t.items() if s not in refresh and s > 1] or [0])
out = {"run": sys.argv[2], "steady_step_s": steady, "steady_tok_s": tokens / steady if steady else None,
       "peak_GiB": rows[-1]["peak_memory_bytes"] / 2**30}
if refresh:  # the last refresh step: step 1's also pays one-time costs (plans, solver set-up, module loading)
    r = max(refresh); out["refresh_step"] = r; out["refresh_step_s"] = t[r]; out["refreshes"] = by_step[r]["projector_refreshes"]
    out["refresh_steps"] = {s: [round(t[s], 4), by_step[s]["projector_refreshes"]] for s in sorted(refresh)}
    out["energy_mean"] = by_step[r]["captured_energy_mean"]
    for K in (50, 100):  # one refresh step per K steps
        out[f"amortized_tok_s_K{K}"] = tokens * K / ((K - 1) * steady + t[r])
print(json.dumps(out))
PY
}
common() { echo "--data data/tinyshakespeare/input.txt --device cuda --steps $STEPS --batch 16 --seq 512 --val-every 0 --val-batches 1 \
  --log-every 1000 --no-checkpoint --recompute ${RECOMPUTE:-layer}"; }
run() {
  local name=$1 start=$SECONDS; shift
  timeout 240 $BIN/owlore train $(common) --out /tmp/$name "$@" > $OUT/logs/$name.log 2>&1
  echo "$name rc=$? ($((SECONDS - start)) s): $(grep -E '^done|error' $OUT/logs/$name.log | head -1)" | tee -a $S
  grep -E "^  (weights|optimizer state|gradients|activations|workspace|total|host) " $OUT/logs/$name.log | sed "s/^/  /" >> $S
  [ -f /tmp/$name/metrics.jsonl ] && summarize /tmp/$name/metrics.jsonl $name
}
ref7b="--preset llama2-7b --method owlore --gamma 5 --period 50 --rank 256 --proj-gap 100 --galore-scale 1 --projector fast \
  --outlier-samples 16 --outlier-seq 512 --lr 3e-4"
lisa7b="--preset llama2-7b --method lisa --gamma 2 --period 5 --moments bf16"
off=--offload-activations
if has 7b; then  # the LLaMA-2-7B runs, with the layer inputs offloaded and (LISA) without
  run 7b-lisa-bf16 $lisa7b
  run 7b-lisa-bf16-offload $lisa7b $off
  run 7b-owlore-offload $ref7b $off
  run 7b-owlore-bf16-offload $ref7b --moments bf16 $off
  run 7b-owlore-frozen-emb-offload $ref7b --freeze-embeddings $off
fi
if has 7b-lisa; then  # LISA gamma 2, bf16 moments, layer inputs offloaded (its peer: peer-lisa)
  run 7b-lisa-bf16-offload $lisa7b $off
fi
if has 7b-owlore; then  # the OwLore reference config's memory: fp32 and bf16 moments, frozen embeddings
  run 7b-owlore-offload $ref7b $off
  run 7b-owlore-bf16-offload $ref7b --moments bf16 $off
  run 7b-owlore-frozen-emb-offload $ref7b --freeze-embeddings $off
fi
if has probe; then
  for cfg in "" ":4096:1" ":0:0"; do
    echo "probe_memory, CUBLAS_WORKSPACE_CONFIG='$cfg'" | tee -a $S
    if [ -n "$cfg" ]; then CUBLAS_WORKSPACE_CONFIG=$cfg $BIN/probe_memory --stack 0; else $BIN/probe_memory --stack 0; fi 2>&1 | tail -12 | tee -a $S
  done
fi
if has lisa-more; then  # LISA: fp32 moments and frozen embeddings at 7B; SmolLM2 lisa and ows, frozen or not
  run 7b-lisa-fp32-offload ${lisa7b/--moments bf16/--moments fp32} $off
  run 7b-lisa-bf16-offload-frozen-emb $lisa7b $off --freeze-embeddings
  for m in "lisa --gamma 2" "ows --gamma 5"; do
    n=${m%% *}
    STEPS=30 RECOMPUTE=none run smollm2-$n --preset smollm2-135m --method $m --period 10 --outlier-samples 16 --outlier-seq 512
    STEPS=30 RECOMPUTE=none run smollm2-$n-frozen-emb --preset smollm2-135m --method $m --period 10 --outlier-samples 16 \
      --outlier-seq 512 --freeze-embeddings
  done
fi
if has 7b-refresh; then  # a re-sampling at step 7 (period 6): its new layers' refreshes on a warm step
  STEPS=12 run 7b-owlore-offload-resample ${ref7b/--period 50/--period 6} $off
  STEPS=12 run 7b-owlore-frozen-emb-offload-resample ${ref7b/--period 50/--period 6} $off --freeze-embeddings
fi
if has 7b-kept; then  # OwLore keeping every layer input on the GPU
  run 7b-owlore $ref7b
  run 7b-owlore-frozen-emb $ref7b --freeze-embeddings
fi
if has small; then
small="--preset smollm2-135m --method owlore --gamma 5 --period 50 --rank 128 --proj-gap 100 --galore-scale 1 \
  --projector fast --outlier-samples 16 --outlier-seq 512 --lr 3e-4"
STEPS=30 RECOMPUTE=none run smollm2-owlore $small
STEPS=30 run smollm2-owlore-recompute $small
fi
has peer-lisa && timeout 200 python3 tools/bench_train_peer.py --preset llama2-7b --batch 16 --seq 512 --lisa-gamma 2 \
  --lisa-period 5 --grad-ckpt --steps 6 --warmup 2 2>$OUT/logs/peer7b-lisa.err | tail -1 | tee -a $S
has peer-owlore && timeout 200 python3 tools/bench_train_peer.py --preset llama2-7b --method owlore --gamma 5 --period 50 --galore-rank 256 \
  --proj-gap 100 --galore-scale 1 --lr 3e-4 --batch 16 --seq 512 --grad-ckpt --warmup 1 --steps 6 2>$OUT/logs/peer7b.err | tail -1 | tee -a $S
has small && timeout 100 python3 tools/bench_train_peer.py --preset smollm2-135m --method owlore --gamma 5 --period 50 --galore-rank 128 \
  --proj-gap 100 --galore-scale 1 --lr 3e-4 --batch 16 --seq 512 --warmup 3 --steps 20 2>$OUT/logs/peer135m.err | tail -1 | tee -a $S
