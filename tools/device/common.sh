# shellcheck shell=bash
# Sourced by the measurement scripts that tools/device/run.sh runs (not a script of its own).
# run.sh exports, before each script:
#   BIN      the unpacked binaries (owlore, test_*_gpu, bench_*, probe_memory; COMMIT)
#   RESULTS  this script's folder under $OUT, packed into $OUT/<script>.tar when it ends
#   WORK     scratch space for this script (run directories, checkpoints), not returned
#   GGUF     the SmolLM2-135M-Instruct GGUF when it was carried (tools/device/stage.sh), else unset
#   PARTS    the parts the call named (run.sh name:part,part), else the script's default
# What a script prints is its summary: run.sh copies it into $OUT/summary.txt. A script ends with
# `exit $failed`: non-zero when any of its runs failed.
set -u
export PYTHONUNBUFFERED=1
failed=0

# status NAME RC: prints "NAME rc=RC"; a non-zero RC marks the script failed.
status() {
  echo "$1 rc=$2"
  [ "$2" -eq 0 ] || failed=1
}

# has PART: whether PARTS names it.
has() { [[ " $PARTS " == *" $1 "* ]]; }

# parts_default "a b c": PARTS unless the call named none.
parts_default() { PARTS=${PARTS:-$1}; echo "parts: $PARTS"; }

need_gguf() {
  [ -n "${GGUF:-}" ] && [ -f "$GGUF" ] && return 0
  echo "error: this part needs the SmolLM2 GGUF: carry .carry/gguf1 in one call and .carry/gguf2 in the next (tools/device/stage.sh)"
  failed=1
  return 1
}

# train NAME TIMEOUT_S FLAGS...: one `owlore train` run into $WORK/NAME (unless FLAGS give --out);
# its log and metrics go to $RESULTS; prints its last line (done: ... or the error) and its
# memory plan.
train() {
  local name=$1 limit=$2 start=$SECONDS out; shift 2
  out=$WORK/$name
  [[ " $* " == *" --out "* ]] || set -- "$@" --out "$out"
  [[ " $* " == *" --out "* ]] && out=$(printf '%s\n' "$@" | grep -A1 -x -- --out | tail -1)
  timeout "$limit" "$BIN/owlore" train "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || failed=1
  echo "$name rc=$rc ($((SECONDS - start)) s): $(grep -E '^done|error' "$RESULTS/$name.log" | head -1)"
  grep -E "^  (weights|optimizer state|gradients|activations|workspace|total|host) " "$RESULTS/$name.log" | sed "s/^/  /"
  cp "$out/metrics.jsonl" "$RESULTS/$name.metrics.jsonl" 2>/dev/null
  return $rc
}

# plot PNG TITLE RUN_DIR... [--labels a,b]: tools/plot_metrics.py where matplotlib is installed.
plot() {
  local png=$1 title=$2; shift 2
  if python3 -c "import matplotlib" 2>/dev/null; then
    python3 tools/plot_metrics.py "$@" -o "$RESULTS/$png" --title "$title" | tail -1
  else
    echo "no matplotlib here: plot the returned metrics with tools/plot_metrics.py"
  fi
}

# step_times NAME TOKENS_PER_STEP: one JSON line from NAME's metrics: the steady step (median of
# the steps after the first without a projector refresh), the last refresh step and the
# tokens/s amortized over K = 50 and 100 steps with one such refresh step each.
step_times() {
  python3 - "$RESULTS/$1.metrics.jsonl" "$1" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tokens = int(sys.argv[3])
by_step = {r["step"]: r for r in rows if "tokens_per_s" in r}
t = {s: tokens / r["tokens_per_s"] for s, r in by_step.items()}
refresh = [s for s, r in by_step.items() if r.get("projector_refreshes")]
steady = statistics.median([v for s, v in t.items() if s not in refresh and s > 1] or [0])
out = {"run": sys.argv[2], "steady_step_s": steady, "steady_tok_s": tokens / steady if steady else None,
       "peak_GiB": rows[-1]["peak_memory_bytes"] / 2**30}
if refresh:  # step 1's refreshes also pay one-time costs (plans, solver set-up, module loading)
    r = max(refresh)
    out.update(refresh_step=r, refresh_step_s=t[r], refreshes=by_step[r]["projector_refreshes"],
               refresh_steps={s: [round(t[s], 4), by_step[s]["projector_refreshes"]] for s in sorted(refresh)},
               energy_mean=by_step[r]["captured_energy_mean"])
    for K in (50, 100):
        out[f"amortized_tok_s_K{K}"] = tokens * K / ((K - 1) * steady + t[r])
print(json.dumps(out))
PY
}

# peer NAME TIMEOUT_S ARGS...: the PyTorch training peer (tools/bench/bench_train_peer.py); its
# JSON line is printed and kept in $RESULTS/NAME.json, its stderr in $RESULTS/NAME.err.
peer() {
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 tools/bench/bench_train_peer.py "$@" > "$RESULTS/$name.out" 2> "$RESULTS/$name.err"
  status "$name" $?
  tail -1 "$RESULTS/$name.out"
}
