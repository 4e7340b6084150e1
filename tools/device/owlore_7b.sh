#!/usr/bin/env bash
# LISA and OwLore against the PyTorch peers (tools/bench/bench_train_peer.py: transformers bf16 +
# SDPA, gradient checkpointing at 7B; LISA by freezing, OwLore with GaLore-Adam on exact SVDs),
# random weights of LLaMA-2-7B or SmolLM2-135M shapes, 16 x 512 tokens a step: tokens/s (steady,
# refresh steps, amortized over K = 50 and 100), peak memory and the memory plan of each run.
# Parts (default: 7b-owlore 7b-lisa peer-owlore peer-lisa, about 8 minutes):
#   7b-owlore     OwLore's reference config (gamma 5, K 50, r 256, T 100, alpha 1, fast projector),
#                 layer inputs offloaded: fp32 moments, --moments bf16, --freeze-embeddings
#   7b-lisa       LISA gamma 2, K 5, bf16 moments, layer inputs offloaded
#   7b-lisa-more  LISA with fp32 moments, with --freeze-embeddings, with the layer inputs on the GPU
#   7b-kept       OwLore with the layer inputs on the GPU (what offloading costs)
#   7b-resample   OwLore re-sampling at step 7 (--period 6): the new layers' refreshes on a warm step
#   peer-owlore, peer-lisa   the 7B peers
#   small         SmolLM2 OwLore (gamma 5, r 128) with --recompute none and layer, and its peer
#   small-lisa    SmolLM2 lisa gamma 2 and ows gamma 5, with and without --freeze-embeddings
#   probe         what the device holds outside the memory plan (tools/bench/probe_memory.cu)
#                 under three CUBLAS_WORKSPACE_CONFIG settings
# Run through tools/device/run.sh.
source tools/device/common.sh
parts_default "7b-owlore 7b-lisa peer-owlore peer-lisa"
tokens=$((16 * 512))
# run NAME STEPS RECOMPUTE FLAGS...: one owlore run on Tiny Shakespeare bytes and its step times.
run() {
  local name=$1 steps=$2 recompute=$3; shift 3
  train "$name" 240 --data data/tinyshakespeare/input.txt --device cuda --steps "$steps" --batch 16 --seq 512 \
    --val-every 0 --val-batches 1 --log-every 1000 --no-checkpoint --recompute "$recompute" "$@" &&
    step_times "$name" $tokens
}
owlore7b="--preset llama2-7b --method owlore --gamma 5 --period 50 --rank 256 --proj-gap 100 --galore-scale 1 \
  --projector fast --outlier-samples 16 --outlier-seq 512 --lr 3e-4"
lisa7b="--preset llama2-7b --method lisa --gamma 2 --period 5"
off=--offload-activations
if has 7b-owlore; then
  run 7b-owlore-offload 8 layer $owlore7b $off
  run 7b-owlore-bf16-offload 8 layer $owlore7b --moments bf16 $off
  run 7b-owlore-frozen-emb-offload 8 layer $owlore7b --freeze-embeddings $off
fi
has 7b-lisa && run 7b-lisa-bf16-offload 8 layer $lisa7b --moments bf16 $off
if has 7b-lisa-more; then
  run 7b-lisa-fp32-offload 8 layer $lisa7b --moments fp32 $off
  run 7b-lisa-bf16-offload-frozen-emb 8 layer $lisa7b --moments bf16 $off --freeze-embeddings
  run 7b-lisa-bf16 8 layer $lisa7b --moments bf16
fi
has 7b-kept && run 7b-owlore 8 layer $owlore7b
if has 7b-resample; then
  run 7b-owlore-offload-resample 12 layer ${owlore7b/--period 50/--period 6} $off
fi
has peer-owlore && peer peer-7b-owlore 240 --preset llama2-7b --method owlore --gamma 5 --period 50 --galore-rank 256 \
  --proj-gap 100 --galore-scale 1 --lr 3e-4 --batch 16 --seq 512 --grad-ckpt --warmup 1 --steps 6
has peer-lisa && peer peer-7b-lisa 240 --preset llama2-7b --method lisa --gamma 2 --period 5 --batch 16 --seq 512 \
  --grad-ckpt --warmup 2 --steps 6
if has small; then
  small="--preset smollm2-135m --method owlore --gamma 5 --period 50 --rank 128 --proj-gap 100 --galore-scale 1 \
    --projector fast --outlier-samples 16 --outlier-seq 512 --lr 3e-4"
  run smollm2-owlore 30 none $small
  run smollm2-owlore-recompute 30 layer $small
  peer peer-smollm2-owlore 120 --preset smollm2-135m --method owlore --gamma 5 --period 50 --galore-rank 128 \
    --proj-gap 100 --galore-scale 1 --lr 3e-4 --batch 16 --seq 512 --warmup 3 --steps 20
fi
if has small-lisa; then
  for m in "lisa --gamma 2" "ows --gamma 5"; do
    n=${m%% *}
    run smollm2-$n 30 none --preset smollm2-135m --method $m --period 10 --outlier-samples 16 --outlier-seq 512
    run smollm2-$n-frozen-emb 30 none --preset smollm2-135m --method $m --period 10 --outlier-samples 16 \
      --outlier-seq 512 --freeze-embeddings
  done
fi
if has probe; then
  for cfg in default :4096:1 :0:0; do
    echo "probe_memory, CUBLAS_WORKSPACE_CONFIG=$cfg"
    if [ $cfg = default ]; then timeout 120 "$BIN/probe_memory" --stack 0
    else CUBLAS_WORKSPACE_CONFIG=$cfg timeout 120 "$BIN/probe_memory" --stack 0; fi 2>&1 | tee "$RESULTS/probe${cfg//:/_}.txt" | tail -12
  done
fi
exit $failed
