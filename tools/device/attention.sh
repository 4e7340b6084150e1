#!/usr/bin/env bash
# Flash attention (src/kernels/attention.cuh), causal GQA at hd 128 (32/8 heads) and hd 64 (9/3),
# 16,384 tokens, T 512..4096: the instructions each kernel compiled to (HMMA, LDSM, local-memory
# loads and stores per kernel, from the binary's SASS), tools/bench/bench_attention.cu (every
# tile variant), and torch SDPA's FlashAttention-2 and cuDNN backends timed in the same call
# (tools/bench/bench_attention_peer.py, which writes the page's table). Its correctness is
# gpu_tests. Parts (default all): sass bench peer. Run through tools/device/run.sh.
source tools/device/common.sh
parts_default "sass bench peer"
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
if has sass; then
  echo "SASS instructions per kernel:"
  cuobjdump -sass "$BIN/bench_attention" | grep -E "Function :|HMMA|LDSM|LDL|STL" |
    awk '/Function/ {if (n) print n, "HMMA", h, "LDSM", l, "LDL", s, "STL", x; n = $3; h = l = s = x = 0}
         /HMMA/ {h++} /LDSM/ {l++} /LDL/ {s++} /STL/ {x++} END {print n, "HMMA", h, "LDSM", l, "LDL", s, "STL", x}' |
    sed -E 's/_ZN6owlore16attention_detail[0-9]*//; s/EEEv[^ ]*//' | tee "$RESULTS/sass.txt"
fi
if has bench || has peer; then
  timeout 200 "$BIN/bench_attention" "$RESULTS/ours.jsonl" > "$RESULTS/bench.log" 2>&1
  status bench_attention $?; cat "$RESULTS/bench.log"
fi
if has peer; then
  timeout 200 python3 tools/bench/bench_attention_peer.py --ours "$RESULTS/ours.jsonl" --commit "$(cat "$BIN/COMMIT")" \
    --out "$RESULTS" > "$RESULTS/peer.log" 2>&1
  status peer $?; cat "$RESULTS/peer.log"
fi
exit $failed
