#!/usr/bin/env python3
"""PyTorch peer for tools/bench/bench_kernels.cu: the same ops at the same shapes (8192 tokens, SmolLM2-135M
and LLaMA-2-7B layers) in eager PyTorch bf16 on the same GPU, timed with CUDA events (median of
15 samples of 10 calls after warm-up, inputs rotated over enough sets to exceed 3x L2).
Bytes/FLOPs counted exactly as in bench_kernels.cu, so the GB/s columns compare directly.
Usage: python3 tools/bench/bench_kernels_peer.py"""
import math
import statistics

import torch
import torch.nn.functional as F

dev = "cuda"
props = torch.cuda.get_device_properties(0)
L2 = getattr(props, "L2_cache_size", 50 << 20)


def sets_for(nbytes):
    return max(1, min(16, math.ceil(3.0 * L2 / nbytes)))


def time_ms(op, n_sets, reps=10, samples=15):
    k = 0
    for _ in range(3):
        op(k % n_sets); k += 1
    ms = []
    for _ in range(samples):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            op(k % n_sets); k += 1
        b.record(); b.synchronize()
        ms.append(a.elapsed_time(b) / reps)
    return statistics.median(ms)


def row(model, op, shape, ms, nbytes=None, flops=None):
    if nbytes is not None:
        print(f"| {model} | {op} | {shape} | {ms*1e3:.1f} | {nbytes/ms/1e6:.0f} GB/s |", flush=True)
    else:
        print(f"| {model} | {op} | {shape} | {ms*1e3:.1f} | {flops/ms/1e9:.0f} TFLOP/s |", flush=True)


def rnd(*shape, scale=1.0):
    return (torch.rand(*shape, device=dev, dtype=torch.float32) * 2 - 1).mul_(scale).to(torch.bfloat16)


def hf_rmsnorm(x, w, eps=1e-5):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def bench(name, C, Fd, Hq, Hkv, hd, V, theta, N=8192):
    NC, NF = N * C, N * Fd
    # RMSNorm (Hugging Face LlamaRMSNorm) forward / backward, fused residual via torch.compile-free eager
    nbytes = 2.0 * NC * 2 + 4.0 * N + 2.0 * C
    S = sets_for(nbytes)
    xs = [rnd(N, C) for _ in range(S)]
    w = rnd(C).add_(1.0)
    row(name, "rmsnorm_forward (HF eager)", f"{N}x{C}", time_ms(lambda s: hf_rmsnorm(xs[s], w), S), nbytes)
    if hasattr(F, "rms_norm"):
        row(name, "rmsnorm_forward (F.rms_norm)", f"{N}x{C}", time_ms(lambda s: F.rms_norm(xs[s], (C,), w, 1e-5), S), nbytes)
    bs = [rnd(N, C) for _ in range(S)]
    def fused(s):
        r = xs[s] + bs[s]
        return hf_rmsnorm(r, w)
    row(name, "rmsnorm_residual_forward (eager)", f"{N}x{C}", time_ms(fused, S), 4.0 * NC * 2 + 4.0 * N)
    xg = [x.clone().requires_grad_(True) for x in xs]
    wg = w.clone().requires_grad_(True)
    outs = [hf_rmsnorm(x, wg) for x in xg]
    gs = [rnd(N, C) for _ in range(S)]
    row(name, "rmsnorm_backward (HF autograd)", f"{N}x{C}",
        time_ms(lambda s: torch.autograd.grad(outs[s], (xg[s], wg), gs[s], retain_graph=True), S), 3.0 * NC * 2 + 4.0 * N)
    del xs, bs, xg, outs, gs
    # residual
    S = sets_for(3.0 * NC * 2)
    a = [rnd(N, C) for _ in range(S)]; b = [rnd(N, C) for _ in range(S)]
    row(name, "residual_forward", f"{N}x{C}", time_ms(lambda s: a[s] + b[s], S), 3.0 * NC * 2)
    del a, b
    # SwiGLU
    S = sets_for(3.0 * NF * 2)
    gu = [rnd(N, 2 * Fd, scale=3.0) for _ in range(S)]
    def sw(s):
        g, u = gu[s].chunk(2, dim=-1)
        return F.silu(g) * u
    row(name, "swiglu_forward", f"{N}x{Fd}", time_ms(sw, S), 3.0 * NF * 2)
    gug = [t.clone().requires_grad_(True) for t in gu]
    outs = []
    for t in gug:
        g, u = t.chunk(2, dim=-1)
        outs.append(F.silu(g) * u)
    dos = [rnd(N, Fd) for _ in range(S)]
    row(name, "swiglu_backward (autograd)", f"{N}x{Fd}",
        time_ms(lambda s: torch.autograd.grad(outs[s], gug[s], dos[s], retain_graph=True), S), 5.0 * NF * 2)
    del gu, gug, outs, dos
    # RoPE (HF apply_rotary_pos_emb on q and k of a packed qkv)
    heads = Hq + Hkv
    nbytes = 2.0 * N * heads * hd * 2
    S = sets_for(nbytes)
    T = 2048
    qkv = [rnd(N // T, T, Hq + 2 * Hkv, hd) for _ in range(S)]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(T, device=dev, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(torch.bfloat16)[None, :, None, :]
    sin = emb.sin().to(torch.bfloat16)[None, :, None, :]
    def rope(s):
        q = qkv[s][:, :, :Hq]; k = qkv[s][:, :, Hq:Hq + Hkv]
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    row(name, "rope_forward (HF eager, q+k)", f"{N}x({Hq}+{Hkv})x{hd}", time_ms(rope, S), nbytes)
    del qkv
    # embedding
    wte = rnd(V, C)
    tok = torch.randint(0, V, (N,), device=dev)
    S = sets_for(2.0 * NC * 2)
    row(name, "encoder_forward (F.embedding)", f"{N} tok, {V}x{C}", time_ms(lambda s: F.embedding(tok, wte), S), 2.0 * NC * 2 + 4.0 * N)
    wteg = wte.clone().requires_grad_(True)
    e = F.embedding(tok, wteg)
    do = rnd(N, C)
    uniq = tok.unique().numel()
    row(name, "encoder_backward (autograd, bf16 dwte)", f"{N} tok, {V}x{C}",
        time_ms(lambda s: torch.autograd.grad(e, wteg, do, retain_graph=True), 1), 1.0 * NC * 2 + 2.0 * uniq * C * 2 + 4.0 * N)
    del wte, wteg, e
    # AdamW over one layer's parameters (fused=True), bf16 params (state bf16, as torch keeps param dtype)
    n = C * (Hq * hd) * 2 + C * (Hkv * hd) * 2 + 3 * C * Fd
    for dtype, label, bpp in ((torch.bfloat16, "bf16 p,m,v (fused)", 14.0), (torch.float32, "fp32 p,m,v (fused)", 32.0)):
        p = torch.nn.Parameter(rnd(n, scale=0.1).to(dtype))
        p.grad = rnd(n, scale=0.01).to(dtype)
        opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01, fused=True)
        row(name, f"adamw {label}", f"{n/1e6:.1f}M params", time_ms(lambda s: opt.step(), 1), bpp * n)
        del p, opt
    g = rnd(n, scale=0.01)
    row(name, "sum_squares (bf16, torch.linalg.vector_norm)", f"{n/1e6:.1f}M params",
        time_ms(lambda s: torch.linalg.vector_norm(g, dtype=torch.float32), 1), 2.0 * n)
    # GEMMs
    QKV = (Hq + 2 * Hkv) * hd
    for label, n_, ic, oc in (("matmul fwd qkv", N, C, QKV), ("matmul fwd gate_up", N, C, 2 * Fd), ("matmul fwd down", N, Fd, C)):
        x = rnd(n_, ic); wt = rnd(oc, ic, scale=0.05)
        row(name, label, f"{n_}x{ic}x{oc}", time_ms(lambda s: F.linear(x, wt), 1), flops=2.0 * n_ * ic * oc)
    # LM head + CE, materialized logits (the usual PyTorch path), forward + backward
    x = rnd(N, C).requires_grad_(True)
    wt = rnd(V, C, scale=0.05).requires_grad_(True)
    tgt = (torch.arange(N, device=dev) * 7919) % V
    def head(s):
        loss = F.cross_entropy(F.linear(x, wt).float(), tgt)
        loss.backward()
    row(name, "lm_head_ce fwd+bwd (materialized logits)", f"{N}x{C}x{V}", time_ms(head, 1, 3, 7), flops=6.0 * N * C * V)
    del x, wt
    torch.cuda.empty_cache()


if __name__ == "__main__":
    print(f"card: {props.name}; torch {torch.__version__}")
    print("| model | op (PyTorch) | shape | time (us) | achieved |")
    print("|---|---|---|---|---|")
    bench("SmolLM2-135M", 576, 1536, 9, 3, 64, 49152, 1e5)
    bench("LLaMA-2-7B", 4096, 11008, 32, 32, 128, 32000, 1e4)
