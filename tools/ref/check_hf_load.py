#!/usr/bin/env python3
"""Loads a checkpoint written by owlore with transformers' LlamaForCausalLM and computes the
mean next-token loss on an OWLTOK1 token file, packed exactly as `owlore eval` packs it
(rows of seq+1 tokens, inputs row[:-1], targets row[1:]). Prints one JSON line; compare its
loss with `owlore eval --model CKPT --data TOKENS --seq S` on the same file.

usage: check_hf_load.py CKPT_DIR TOKENS.owltok --seq 256 [--max-rows 64] [--ours LOSS]
"""
import argparse, json, struct, sys

import numpy as np
import torch
from transformers import LlamaForCausalLM


def read_token_file(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic, version, width, count = head[:8], *struct.unpack("<IIQ", head[8:24])
        assert magic == b"OWLTOK1\0", f"{path}: not an OWLTOK1 file"
        dtype = np.uint16 if width == 2 else np.uint32
        return np.frombuffer(f.read(count * width), dtype=dtype).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("tokens")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--max-rows", type=int, default=64)
    ap.add_argument("--ours", type=float, default=None, help="owlore eval's loss, to report the difference")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = LlamaForCausalLM.from_pretrained(a.ckpt, torch_dtype=torch.float32).to(dev).eval()
    tokens = read_token_file(a.tokens)
    rows = min(len(tokens) // (a.seq + 1), a.max_rows)
    data = torch.tensor(tokens[: rows * (a.seq + 1)].reshape(rows, a.seq + 1), device=dev)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, rows, 8):
            batch = data[i : i + 8]
            logits = model(batch[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                     reduction="sum")
            total += loss.item()
            count += batch[:, 1:].numel()
    result = {"hf_loss": total / count, "tokens": count, "rows": rows, "ckpt": a.ckpt}
    if a.ours is not None:
        result["owlore_loss"] = a.ours
        result["rel_diff"] = abs(a.ours - result["hf_loss"]) / result["hf_loss"]
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
