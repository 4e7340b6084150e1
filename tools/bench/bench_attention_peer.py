#!/usr/bin/env python3
"""Peer for tools/bench/bench_attention.cu: torch SDPA (FLASH_ATTENTION and CUDNN_ATTENTION backends),
causal, same shapes, same FLOP convention, timed in the same run; joins our JSON lines and writes
the markdown table with ratios (peer time / our time: > 1 means we are faster).

  python3 tools/bench/bench_attention_peer.py --ours ours.jsonl --commit <sha> [--date YYYY-MM-DD] --out DIR

The peer gets contiguous (B,H,T,hd) q/k/v leaves (the layout it wants; no packing cost timed).
GQA: enable_gqa=True where the backend takes it, else K/V expanded per query head outside the
timed region (the expansion's backward is then not timed either: in the peer's favour).
Ceiling: an 8192^3 bf16 torch matmul on random data, same run.
"""
import argparse
import datetime
import json
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    ev[0].record()
    for i in range(reps):
        fn()
        ev[i + 1].record()
    torch.cuda.synchronize()
    return statistics.median(ev[i].elapsed_time(ev[i + 1]) for i in range(reps))


def time_backend(backend, B, T, Hq, Hkv, hd):
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda h: (torch.rand(B, h, T, hd, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16)
    q, k, v = mk(Hq), mk(Hkv), mk(Hkv)
    dout = mk(Hq)
    mode = "gqa"
    with sdpa_kernel([backend]):
        try:
            q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))
            F.scaled_dot_product_attention(q_, k_, v_, is_causal=True, enable_gqa=True).backward(dout)
            kw = dict(is_causal=True, enable_gqa=True)
        except Exception:
            mode = "expanded"
            rep = Hq // Hkv
            k, v = k.repeat_interleave(rep, 1).contiguous(), v.repeat_interleave(rep, 1).contiguous()
            q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))
            kw = dict(is_causal=True)
            F.scaled_dot_product_attention(q_, k_, v_, **kw).backward(dout)
        fwd = lambda: F.scaled_dot_product_attention(q_, k_, v_, **kw)
        def fb():
            F.scaled_dot_product_attention(q_, k_, v_, **kw).backward(dout)
        t_fwd = median_ms(fwd)
        t_fb = median_ms(fb)
    return t_fwd, t_fb, mode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    card = torch.cuda.get_device_name(0)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t_mm = median_ms(lambda: a @ b, reps=10)
    ceiling = 2 * 8192**3 / t_mm * 1e-9
    print(f"card: {card}; torch {torch.__version__}; bf16 matmul ceiling {ceiling:.0f} TFLOP/s", flush=True)

    rows = [json.loads(l) for l in open(args.ours) if l.strip()]
    lines = []
    for r in rows:
        B, T, Hq, Hkv, hd = r["B"], r["T"], r["Hq"], r["Hkv"], r["hd"]
        fwd_flop = 4.0 * B * Hq * T * T * hd / 2
        fb_flop = 3.5 * fwd_flop
        peers = {}
        for name, be in (("FA2", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION)):
            try:
                peers[name] = time_backend(be, B, T, Hq, Hkv, hd)
            except Exception as e:  # a backend that refuses the shape
                print(f"{name} hd{hd} T{T}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                peers[name] = None
        tf = lambda flop, ms: flop / ms * 1e-9
        cell = lambda p, i, flop: f"{p[i]:.3f} ({tf(flop, p[i]):.0f})" if p else "n/a"
        ratio = lambda p, i, ours: f"{p[i] / ours:.2f}" if p else "n/a"
        line = (f"| {hd} | {B}x{T} | {Hq}/{Hkv} | {r['fwd_ms']:.3f} ({tf(fwd_flop, r['fwd_ms']):.0f}) | "
                f"{cell(peers['FA2'], 0, fwd_flop)} | {cell(peers['cuDNN'], 0, fwd_flop)} | "
                f"{r['fwdbwd_ms']:.3f} ({tf(fb_flop, r['fwdbwd_ms']):.0f}) | {cell(peers['FA2'], 1, fb_flop)} | "
                f"{cell(peers['cuDNN'], 1, fb_flop)} | {ratio(peers['FA2'], 1, r['fwdbwd_ms'])} | "
                f"{ratio(peers['cuDNN'], 1, r['fwdbwd_ms'])} | "
                f"{'/'.join(p[2] if p else '-' for p in peers.values())} |")
        print(line, flush=True)
        lines.append(line)
    head = ("| hd | BxT | Hq/Hkv | ours fwd ms (TF/s) | FA2 fwd | cuDNN fwd | ours fwd+bwd ms (TF/s) | "
            "FA2 fwd+bwd | cuDNN fwd+bwd | FA2/ours f+b | cuDNN/ours f+b | peer GQA mode |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = list(rows[0]["variants"].keys()) if rows else []
    variants = ["| hd | BxT | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        variants.append(f"| {r['hd']} | {r['B']}x{r['T']} | " +
                        " | ".join(f"{r['variants'][k]:.3f}" for k in keys) + " |")
    slug = card.replace("NVIDIA ", "").replace(" ", "-").lower()
    md = (f"# attention benchmark: {card}, {args.date}\n\ncommit {args.commit}; torch {torch.__version__}; "
          f"bf16 matmul ceiling {ceiling:.0f} TFLOP/s (8192^3, same run).\n"
          "Causal; FLOPs fwd 4*B*Hq*T^2*hd/2, bwd 2.5x fwd; times are medians of 20 (CUDA events).\n"
          "Ratios are peer time / our time (> 1: ours faster).\n\n" + head + "\n" + "\n".join(lines) +
          "\n\nPer-kernel times of our tile variants (ms):\n\n" + "\n".join(variants) + "\n")
    path = os.path.join(args.out, f"attention-{slug}-{args.date}.md")
    open(path, "w").write(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
