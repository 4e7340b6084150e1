#!/usr/bin/env bash
# The Hugging Face reference fixtures that tests/test_fixtures*.{cpp,cu} read, made where PyTorch
# and transformers are (tools/ref/make_fixtures.py; DESIGN.md §4). Parts (default random):
#   random    the random tiny-gpu model: float64 reference and PyTorch's own bf16 error
#   smollm2   SmolLM2-135M-Instruct from the GGUF (owlore convert to f32, then the reference)
# The fixture files come back in the results; commit them to tests/data/fixtures/<part>/.
# Run through tools/device/run.sh (smollm2 needs the GGUF carried).
source tools/device/common.sh
parts_default random
if has random; then
  timeout 200 python3 tools/ref/make_fixtures.py --random "$WORK/random" > "$RESULTS/random.log" 2>&1
  status make_fixtures-random $?; tail -4 "$RESULTS/random.log"
  mkdir -p "$RESULTS/random" && cp -r "$WORK/random/." "$RESULTS/random/"
fi
if has smollm2 && need_gguf; then
  "$BIN/owlore" convert --model "$GGUF" --out "$WORK/smollm2_f32" --dtype f32 > "$RESULTS/convert.log" 2>&1
  status convert $?
  timeout 300 python3 tools/ref/make_fixtures.py --smollm2 "$WORK/smollm2_f32" "$WORK/smollm2" > "$RESULTS/smollm2.log" 2>&1
  status make_fixtures-smollm2 $?; tail -3 "$RESULTS/smollm2.log"
  mkdir -p "$RESULTS/smollm2" && cp "$WORK/smollm2/fixture.safetensors" "$RESULTS/smollm2/"
fi
exit $failed
