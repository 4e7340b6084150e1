#!/usr/bin/env python3
"""The llama3 RoPE scaling (LLaMA-3.1/3.2 rope_scaling) that owlore's rope_inv_freq() implements,
checked against transformers.

tests/test_ops_cpu.cpp (RopeScaling.*) holds owlore's frequencies to a C++ transcription of
transformers' _compute_llama3_parameters (modeling_rope_utils.py). This script keeps that
transcription honest: it computes the same transcription in numpy, float32 as torch runs it, and
  - with torch installed, compares it with transformers' own function (ROPE_INIT_FUNCTIONS["llama3"])
    on the LLaMA-3.1-8B and LLaMA-3.2-1B configs and on the odd head_dims the C++ test uses;
  - without torch (the transformers function is written in torch), says so and checks only the
    band counts the C++ test asserts (LLaMA-3.1: 29 pairs kept, 6 interpolated, 29 divided by 8).
With --config PATH (a config.json owlore wrote, or the hub's), transformers' config class (no torch
needed) must accept its rope_scaling / rope_parameters and yield the same rope parameters.

usage: check_rope_llama3.py [--config PATH ...]
"""
import argparse, json, math, sys

import numpy as np

# (name, theta, head_dim, factor, low, high, original context): as in tests/test_ops_cpu.cpp.
CASES = [
    ("llama3.1-8b", 500000.0, 128, 8.0, 1.0, 4.0, 8192),
    ("llama3.2-1b", 500000.0, 64, 32.0, 1.0, 4.0, 8192),
    ("odd head_dim 10", 10000.0, 10, 4.0, 1.0, 4.0, 64),
    ("odd head_dim 94", 10000.0, 94, 3.0, 1.0, 4.0, 1000),
]


def transcription(theta, dim, factor, low, high, orig):
    """The formula of _compute_llama3_parameters, in float32."""
    f32 = np.float32
    inv_freq = f32(1.0) / (f32(theta) ** (np.arange(0, dim, 2).astype(f32) / f32(dim)))
    low_wavelen, high_wavelen = orig / low, orig / high
    wavelen = f32(2 * math.pi) / inv_freq
    llama = np.where(wavelen > low_wavelen, inv_freq / f32(factor), inv_freq)
    smooth = (f32(orig) / wavelen - f32(low)) / f32(high - low)
    smoothed = (f32(1) - smooth) * llama / f32(factor) + smooth * llama
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, llama).astype(f32), inv_freq


def hf_config(theta, dim, factor, low, high, orig):
    from transformers import LlamaConfig
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
               "original_max_position_embeddings": orig}
    return LlamaConfig(hidden_size=dim * 4, num_attention_heads=4, head_dim=dim, rope_theta=theta,
                       rope_scaling=scaling, max_position_embeddings=131072)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", action="append", default=[], help="a config.json to validate with transformers")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: transformers' _compute_llama3_parameters cannot run; the C++ "
              "transcription in tests/test_ops_cpu.cpp stays the check (band counts verified here)")
    failures = 0
    for name, *params in CASES:
        ours, plain = transcription(*params)
        kept = int(np.sum(ours == plain))
        divided = int(np.sum(np.isclose(ours, plain / np.float32(params[2]), rtol=1e-7, atol=0)))
        out = {"case": name, "kept": kept, "interpolated": len(ours) - kept - divided, "divided": divided}
        if have_torch:
            theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config(*params), "cpu")
            err = float(np.max(np.abs(theirs.numpy() - ours) / ours))
            out["max_rel_diff_vs_transformers"] = err
            failures += err > 1e-6
        print(json.dumps(out))
        if name == "llama3.1-8b" and (out["kept"], out["interpolated"], out["divided"]) != (29, 6, 29):
            print("llama3.1-8b band counts differ from the C++ test's 29 / 6 / 29", file=sys.stderr)
            failures += 1
    for path in args.config:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(path)
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
        with open(path if path.endswith(".json") else path + "/config.json") as f:
            written = json.load(f)
        want = written.get("rope_scaling") or written.get("rope_parameters")
        ok = rope is not None and rope.get("rope_type") == "llama3" and all(
            float(rope[k]) == float(want[k]) for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                        "original_max_position_embeddings"))
        print(json.dumps({"config": path, "transformers_rope": rope, "matches": ok}))
        failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
