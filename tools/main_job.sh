#!/usr/bin/env bash
# The main job: install what the build needs, fetch the default model (SmolLM2-135M-Instruct,
# GGUF), build, fine-tune it on the bundled GSM8K train set, and plot the loss.
#   with a GPU:    OwLore on the GPU (5 of 30 layers sampled by their outlier ratios every 20
#                  steps, GaLore rank 128 with the fast projector), 16 x 512 tokens per step,
#                  300 steps (about 10 s of training on an H200), checkpoint in runs/main/checkpoint
#   without a GPU: OwLore on the tiny preset on Tiny Shakespeare on the CPU (the trainer's CPU twin)
# Arguments are `owlore train` flags; each replaces the script's own value of that flag
# (tools/main_job.sh --steps 1000 --method lisa --gamma 2), --model and --preset replace each
# other, and --device picks which of the two jobs above runs (default: cuda where a GPU is seen).
# OWLORE_MAIN_JOB_PRINT=1: print the `owlore train` arguments, one a line, and stop (nothing is
# installed, fetched, built or trained).
set -euo pipefail
cd "$(dirname "$0")/.."

# merge_flags DEFAULT... -- GIVEN...: the defaults without every flag GIVEN names (with its value),
# then GIVEN, one word a line. A flag is a word starting with --, as --name VALUE or --name=VALUE;
# a following word that does not start with -- is its value. --model and --preset exclude each other.
merge_flags() {
  local defaults=() given=() names=" " w name i
  while [ $# -gt 0 ] && [ "$1" != -- ]; do defaults+=("$1"); shift; done
  shift
  given=("$@")
  for w in "${given[@]}"; do
    [[ $w == --* ]] || continue
    name=${w%%=*}
    names+="$name "
    [ "$name" = --model ] && names+="--preset "
    [ "$name" = --preset ] && names+="--model "
  done
  for ((i = 0; i < ${#defaults[@]}; i++)); do
    w=${defaults[i]}
    if [[ $w == --* && $names == *" ${w%%=*} "* ]]; then
      # drop the flag and, unless it came as --name=VALUE, the value after it
      [[ $w != *=* && $((i + 1)) -lt ${#defaults[@]} && ${defaults[i + 1]} != --* ]] && i=$((i + 1))
      continue
    fi
    printf '%s\n' "$w"
  done
  [ ${#given[@]} -eq 0 ] || printf '%s\n' "${given[@]}"
}

# flag_value NAME WORD...: the value of the last NAME among the words (empty when absent).
flag_value() {
  local name=$1 value="" prev=""; shift
  for w in "$@"; do
    [ "$prev" = "$name" ] && value=$w
    [[ $w == "$name="* ]] && value=${w#*=}
    prev=$w
  done
  printf '%s' "$value"
}

device=$(flag_value --device "$@")
if [ -z "$device" ]; then
  if nvidia-smi -L >/dev/null 2>&1; then device=cuda; else device=cpu; fi
fi
model="${OWLORE_CACHE:-$HOME/.cache/owlore}/SmolLM2-135M-Instruct.Q4_1.gguf"  # tools/fetch_smollm2.sh's path
if [ "$device" = cpu ]; then
  defaults=(--preset tiny --device cpu --data data/tinyshakespeare/input.txt --method owlore
            --lr 3e-3 --steps 300 --out runs/main)
  sampling=(--gamma 1 --period 20)
  galore=(--rank 8)
else
  defaults=(--model "$model" --data data/gsm8k/train.jsonl --device cuda --method owlore --lr 1e-3
            --steps 300 --batch 16 --seq 512 --warmup 20 --val-every 50 --val-batches 8 --out runs/main)
  sampling=(--gamma 5 --period 20)
  galore=(--rank 128 --projector fast)
fi
# The script's layer-sampling and GaLore values go only with a method that uses them (the trainer
# refuses flags that would have no effect).
method=$(flag_value --method "$@")
case "${method:-owlore}" in lisa | ows | owlore) defaults+=("${sampling[@]}") ;; esac
case "${method:-owlore}" in owlore | galore) defaults+=("${galore[@]}") ;; esac
mapfile -t args < <(merge_flags "${defaults[@]}" -- "$@")
if [ -n "${OWLORE_MAIN_JOB_PRINT:-}" ]; then printf '%s\n' "${args[@]}"; exit 0; fi

tools/install_deps.sh
if [ "$(flag_value --model "${args[@]}")" = "$model" ]; then tools/fetch_smollm2.sh >/dev/null; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target owlore
if [ -z "$(flag_value --device "$@")" ] && [ "$device" = cpu ]; then
  echo "no GPU found: training the tiny preset on the CPU instead"
fi
echo "owlore train ${args[*]}"
build/owlore train "${args[@]}"
out=$(flag_value --out "${args[@]}")
# The plot needs matplotlib: the python3 on the PATH, or Debian's, where python3-matplotlib
# (tools/install_deps.sh) installs it when the PATH leads to another python (pyenv, conda).
for python in python3 /usr/bin/python3 ""; do
  [ -n "$python" ] && "$python" -c "import matplotlib" 2>/dev/null && break
done
if [ -z "$python" ]; then
  echo "error: no python3 with matplotlib for the loss plot (Debian: python3-matplotlib, which" \
    "tools/install_deps.sh installs); the run is in $out: python3 tools/plot_metrics.py $out -o $out/loss.png" >&2
  exit 1
fi
"$python" tools/plot_metrics.py "$out" -o "$out/loss.png"
