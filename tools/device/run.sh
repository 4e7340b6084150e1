#!/usr/bin/env bash
# The runner for the lent GPU machine. Usage:
#   here:        tools/device/stage.sh      (builds with CMake, packs the binaries into .carry/bin
#                                            and the SmolLM2 GGUF into .carry/gguf1, .carry/gguf2)
#   the device:  bash tools/device/run.sh SCRIPT[:PART,PART...] [SCRIPT...]
#                e.g. run(command="bash tools/device/run.sh gpu_tests kernels", carry=[".carry/bin"])
# SCRIPT is one of tools/device/*.sh (each says what it measures and its parts):
#   gpu_tests      every GPU test, compute-sanitizer memcheck and racecheck
#   kernels        layer kernels against copy bandwidth / cuBLAS and PyTorch (bench_kernels)
#   attention      flash attention against torch SDPA (bench_attention)
#   refresh        GaLore projector refresh, exact and fast (bench_refresh)
#   nsight         Nsight Compute on one training step selected by NVTX
#   owlore_7b      LISA and OwLore at LLaMA-2-7B and SmolLM2 shapes beside the PyTorch peers
#   train_smollm2  fine-tuning SmolLM2 on GSM8K: the main job, full fine-tuning beside its peer,
#                  the recompute levels, transformers loading the checkpoint       (GGUF)
#   methods        every method on SmolLM2/GSM8K with a learning-rate sweep         (GGUF)
#   fixtures       the Hugging Face reference fixtures of tests/data/fixtures      (smollm2: GGUF)
# The GGUF does not fit in one call beside the binaries: the scripts that need it run in the
# second of two calls on one warm machine (it stays warm 30 s after a call). The first carries
# [".carry/bin", ".carry/gguf1"] and keeps part 1 in /tmp (run any other scripts in it), the
# second carries [".carry/gguf2"] (the first call's binaries are still there); later calls on
# that machine find the joined GGUF and carry neither.
# Results: $OUT/summary.txt (card, commit, what each script printed) and $OUT/SCRIPT.tar (its
# logs and files; a call returns at most 8 files, so at most 7 scripts a call). A call has
# 10 minutes: scripts run under what is left of OWLORE_DEVICE_BUDGET_S (default 570 s).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/owlore_out}
STATE=/tmp/owlore                    # survives between calls while the machine stays warm
export BIN=$STATE/bin
budget=${OWLORE_DEVICE_BUDGET_S:-570}
summary=$OUT/summary.txt

scripts=()
for arg in "$@"; do
  name=${arg%%:*}
  if [ ! -f "tools/device/$name.sh" ] || [[ $name =~ ^(common|run|stage)$ ]]; then
    echo "error: no device script '$name' (tools/device/$name.sh); scripts:" \
      $(ls tools/device/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -vxE 'common|run|stage')
    exit 2
  fi
  [[ " ${scripts[*]%%:*} " == *" $name "* ]] && { echo "error: $name named twice (name its parts once: $name:a,b)"; exit 2; }
  scripts+=("$arg")
done
if [ ${#scripts[@]} -eq 0 ]; then awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2; fi
if [ ${#scripts[@]} -gt 7 ]; then echo "error: at most 7 scripts a call (a call returns 8 files)"; exit 2; fi
mkdir -p "$OUT" "$STATE"

# The binaries: unpacked from this call's .carry/bin (python's lzma: the machine has no xz), or
# those an earlier call on this machine unpacked.
if [ -f .carry/bin/bins.tar.xz ]; then
  rm -rf "$BIN" && mkdir -p "$BIN"
  python3 -c "import sys, tarfile; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2])" .carry/bin/bins.tar.xz "$BIN" || exit 1
elif [ ! -x "$BIN/owlore" ]; then
  echo "error: no binaries: carry .carry/bin (made by tools/device/stage.sh)"; exit 1
fi
# Tests read their data under the source directory compiled into them: make that path lead here.
src=$(cat "$BIN/SOURCE_DIR")
if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi

# The GGUF: part 1 is kept from the first call, joined with part 2 in the second.
[ -f .carry/gguf1/part1 ] && cp .carry/gguf1/part1 "$STATE/gguf.part1" && echo "GGUF part 1 kept for the next call"
if [ -f .carry/gguf2/part2 ]; then
  if [ ! -f "$STATE/gguf.part1" ]; then
    echo "error: GGUF part 2 without part 1: the call before this one (on this machine, within its 30 s warm) carries .carry/gguf1"
    exit 1
  fi
  cat "$STATE/gguf.part1" .carry/gguf2/part2 |
    python3 -c "import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))" > "$STATE/smollm2.gguf"
  if [ "$(sha256sum "$STATE/smollm2.gguf" | cut -d' ' -f1)" != "$(cat .carry/gguf2/sha256)" ]; then
    echo "error: the joined GGUF's sha256 differs from .carry/gguf2/sha256"; rm -f "$STATE/smollm2.gguf"; exit 1
  fi
  echo "GGUF joined, sha256 ok"
fi
[ -f "$STATE/smollm2.gguf" ] && export GGUF=$STATE/smollm2.gguf

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "commit $(cat "$BIN/COMMIT")"; date -u '+%Y-%m-%d %H:%M UTC'; } | tee "$summary"
for arg in "${scripts[@]}"; do
  name=${arg%%:*}
  parts=""; [[ "$arg" == *:* ]] && parts=${arg#*:} && parts=${parts//,/ }
  left=$((budget - SECONDS))
  if [ $left -le 10 ]; then echo "== $name: not run, the call's time is used up" | tee -a "$summary"; continue; fi
  export RESULTS=$OUT/$name WORK=$STATE/work/$name PARTS=$parts
  rm -rf "$RESULTS" "$WORK" && mkdir -p "$RESULTS" "$WORK"
  echo "== $name${parts:+ ($parts)}" | tee -a "$summary"
  t0=$SECONDS
  timeout "$left" bash "tools/device/$name.sh" 2>&1 | tee -a "$summary"
  rc=${PIPESTATUS[0]}
  echo "== $name rc=$rc ($((SECONDS - t0)) s)" | tee -a "$summary"
  tar -C "$OUT" -cf "$OUT/$name.tar" "$name" && rm -rf "$RESULTS"
done
