#!/usr/bin/env python3
"""The PyTorch peer for training benchmarks: transformers' LlamaForCausalLM in bf16 with SDPA
attention and torch AdamW (fused), on random tokens of the same shape as the owlore run. Full
fine-tuning, or LISA-style (--lisa-gamma G --lisa-period K): every K steps G decoder layers are
drawn uniformly, every other decoder layer is frozen (requires_grad False), the embedding, final
norm and head always train, and one torch AdamW holds the state of whatever has trained (as the
LISA reference code does). Prints one JSON line: steady tokens/s (median step over --steps
after --warmup) and peak memory (torch.cuda.max_memory_allocated), with the card name.

usage: bench_train_peer.py --preset smollm2-135m [--model-dir HF_DIR] --batch 16 --seq 512
       bench_train_peer.py --preset llama2-7b --lisa-gamma 2 --lisa-period 5 --grad-ckpt
"""
import argparse, json, statistics, sys, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PRESETS = {
    # layers, d_model, heads, kv heads, ffn, vocab, rope theta, tied
    "smollm2-135m": (30, 576, 9, 3, 1536, 49152, 1e5, True),
    "llama2-7b": (32, 4096, 32, 32, 11008, 32000, 1e4, False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--model-dir", default=None, help="load these weights instead of a random init")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--lisa-gamma", type=int, default=0, help="LISA: decoder layers trained at once (0: full)")
    ap.add_argument("--lisa-period", type=int, default=5, help="LISA: steps between re-samplings")
    a = ap.parse_args()
    torch.manual_seed(0)
    L, d, h, kv, ffn, V, theta, tied = PRESETS[a.preset]
    if a.model_dir:
        model = LlamaForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    else:
        cfg = LlamaConfig(hidden_size=d, intermediate_size=ffn, num_hidden_layers=L, num_attention_heads=h,
                          num_key_value_heads=kv, vocab_size=V, rope_theta=theta, tie_word_embeddings=tied,
                          max_position_embeddings=max(a.seq, 2048), torch_dtype=torch.bfloat16)
        cfg._attn_implementation = "sdpa"
        with torch.device("cuda"):  # initialize on the GPU: a 7B init on the CPU takes minutes
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model = model.cuda().train()
    layers = model.model.layers
    rng = torch.Generator().manual_seed(0)

    def lisa_sample():
        chosen = set(torch.randperm(len(layers), generator=rng)[: a.lisa_gamma].tolist())
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                p.requires_grad_(i in chosen)

    if a.grad_ckpt:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, fused=True)
    tokens = torch.randint(0, model.config.vocab_size, (a.batch, a.seq + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(a.warmup + a.steps):
        if a.lisa_gamma and step % a.lisa_period == 0:
            lisa_sample()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = model(input_ids=tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    print(json.dumps({"peer": "transformers LlamaForCausalLM bf16 + SDPA + torch AdamW(fused)" +
                              (" + gradient checkpointing" if a.grad_ckpt else "") +
                              (f" + LISA gamma {a.lisa_gamma} period {a.lisa_period}" if a.lisa_gamma else ""),
                      "card": torch.cuda.get_device_name(), "preset": a.preset, "batch": a.batch, "seq": a.seq,
                      "step_s": step_s, "tokens_per_s": a.batch * a.seq / step_s,
                      "peak_memory_bytes": torch.cuda.max_memory_allocated(), "torch": torch.__version__,
                      "final_loss": loss.item()}))


if __name__ == "__main__":
    sys.exit(main())
