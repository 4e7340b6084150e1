#!/usr/bin/env bash
# tools/main_job.sh's flags: each flag the user gives replaces the script's value of it (CLI11
# refuses a flag given twice: "--method: At Most 1 required but received 2"), in both forms
# (--name VALUE, --name=VALUE); --model and --preset replace each other; --device picks the job;
# flags without a value stay as given; the script's sampling and GaLore values go only with a
# method that uses them. Then `owlore train` runs on the README's example, merged
# over the CPU job, for two steps: the parser must take the merged flags.
#   test_main_job_args.sh OWLORE_BINARY
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
owlore=$1
failures=0
args() { OWLORE_MAIN_JOB_PRINT=1 "$root/tools/main_job.sh" "$@" | tr '\n' ' '; }
expect() {  # expect WHAT GOT WANT
  if [ "$2" != "$3" ]; then echo "FAIL $1:"; echo "  got:  $2"; echo "  want: $3"; failures=$((failures + 1)); fi
}
gguf="${OWLORE_CACHE:-$HOME/.cache/owlore}/SmolLM2-135M-Instruct.Q4_1.gguf"
gpu_rest="--lr 1e-3 --batch 16 --seq 512 --warmup 20 --val-every 50 --val-batches 8"

# The script's sampling values go only with a sampling method, its GaLore values only with GaLore.
expect "README example on the GPU job" "$(args --device cuda --steps 1000 --method lisa --gamma 2)" \
  "--model $gguf --data data/gsm8k/train.jsonl $gpu_rest --out runs/main --period 20 --device cuda --steps 1000 --method lisa --gamma 2 "
expect "the CPU job" "$(args --device cpu)" \
  "--preset tiny --data data/tinyshakespeare/input.txt --method owlore --lr 3e-3 --steps 300 --out runs/main --gamma 1 --period 20 --rank 8 --device cpu "
expect "full on the CPU job: no sampling or GaLore values" "$(args --device cpu --method full)" \
  "--preset tiny --data data/tinyshakespeare/input.txt --lr 3e-3 --steps 300 --out runs/main --device cpu --method full "
expect "--name=VALUE, --preset over --model, a flag without value" \
  "$(args --device=cuda --preset tiny-gpu --steps=5 --no-checkpoint --out /tmp/x)" \
  "--data data/gsm8k/train.jsonl --method owlore $gpu_rest --gamma 5 --period 20 --rank 128 --projector fast --device=cuda --preset tiny-gpu --steps=5 --no-checkpoint --out /tmp/x "
expect "--model over --preset" "$(args --device cpu --model m.gguf)" \
  "--data data/tinyshakespeare/input.txt --method owlore --lr 3e-3 --steps 300 --out runs/main --gamma 1 --period 20 --rank 8 --device cpu --model m.gguf "
# Every flag at most once, whatever the user repeats of the script's.
for case in "--device cuda --lr 3e-4 --batch 8 --seq 256 --out o" "--device cpu --period 5 --rank 4 --data d.txt"; do
  # shellcheck disable=SC2086  # the case is a list of words
  dup=$(OWLORE_MAIN_JOB_PRINT=1 "$root/tools/main_job.sh" $case | grep -E '^--' | sed 's/=.*//' | sort | uniq -d | tr '\n' ' ')
  expect "no flag twice for: $case" "$dup" ""
done

# The parser takes the merged flags: the README's example on the CPU job, two steps.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mapfile -t merged < <(OWLORE_MAIN_JOB_PRINT=1 "$root/tools/main_job.sh" --device cpu --steps 2 --method lisa --gamma 2 \
  --val-every 0 --val-batches 1 --out "$tmp/run" --no-checkpoint)
if ! (cd "$root" && "$owlore" train "${merged[@]}" > "$tmp/train.log" 2>&1); then
  echo "FAIL owlore train ${merged[*]}:"; cat "$tmp/train.log"; failures=$((failures + 1))
fi
if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "main_job.sh flags: all cases pass"
