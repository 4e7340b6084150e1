#!/usr/bin/env python3
"""Reference fixtures of Hugging Face LlamaForCausalLM for tests/test_fixtures.cpp (DESIGN.md §4).

Two fixtures:

  --random OUT_DIR          A randomly initialized model of owlore's "tiny-gpu" preset (2 layers,
                            d_model 195, 3 query heads / 1 kv head, head_dim 64, ffn 331, vocab
                            301, untied). Writes OUT_DIR/model (save_pretrained, float32
                            safetensors: the weights our load_model reads) and
                            OUT_DIR/fixture.safetensors: inputs, targets (B=2, T=33), all logits,
                            the mean loss and the full gradient of every parameter.

  --smollm2 HF_DIR OUT_DIR  HF_DIR: a float32 Hugging Face checkpoint that owlore wrote from the
                            SmolLM2-135M-Instruct GGUF (our own dequantization, so both sides hold
                            the same weights). Writes OUT_DIR/fixture.safetensors, kept small
                            (about 0.2 MB): inputs/targets (B=2, T=24: real text + random ids),
                            logits at 512 seeded vocabulary columns, every position's log-sum-exp
                            over the whole vocabulary, the loss, and per parameter 64 seeded
                            gradient entries and the gradient's L2 norm.

The reference is computed in float64 on the CPU. Three places where transformers computes in
float32 even in a float64 model are replaced, on the float64 copy only, by the same math in float64:
RMSNorm (casts to float32), the rotary cos/sin (computed in float32) and the eager attention
softmax (dtype=float32). The unmodified model is also run in float32 and its distance from the
reference is printed and stored in the metadata (hf_fp32_*), so the fixture itself shows that the
float64 reference is Hugging Face's function and how far plain float32 PyTorch lands from it.

Loss: targets (B,T) are the target token of each position (no shift; -100 = ignored); loss is the
mean of -log_softmax(logits)[target] over the kept positions, as owlore's CpuModel computes it.

Run from the repository root (needs torch, transformers, safetensors, numpy):
  python3 tools/ref/make_fixtures.py --random tests/data/fixtures/random
  python3 tools/ref/make_fixtures.py --smollm2 HF_DIR tests/data/fixtures/smollm2
"""
import argparse
import copy
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IGNORE = -100
TV_MAJOR = int(transformers.__version__.split(".")[0])

# owlore's "tiny-gpu" preset (src/model/config.cpp). d_model 195 != 3 heads x 64 on purpose; transformers 5
# refuses hidden_size % num_attention_heads != 0 even with head_dim given, so 195, not 197.
TINY_GPU = dict(
    vocab_size=301,
    hidden_size=195,
    intermediate_size=331,
    num_hidden_layers=2,
    num_attention_heads=3,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)


def no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def rope_theta_of(config):
    """rope_theta from a 4.x (top level) or 5.x (rope_parameters) config; refuses scaled RoPE."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            sys.exit(f"rope_parameters {params}: only plain RoPE (rope_type 'default') is supported")
        if "rope_theta" in params:
            return float(params["rope_theta"])
    scaling = getattr(config, "rope_scaling", None)
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        sys.exit(f"rope_scaling {scaling}: only plain RoPE is supported")
    return float(config.rope_theta)


def tiny_gpu_config():
    p = dict(TINY_GPU)
    theta = p.pop("rope_theta")
    rope = dict(rope_parameters={"rope_type": "default", "rope_theta": theta}) if TV_MAJOR >= 5 else dict(
        rope_theta=theta, rope_scaling=None)
    config = LlamaConfig(**p, **rope, hidden_act="silu", tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, attention_dropout=0.0, attn_implementation="eager")
    # Every field must be what owlore's preset says: a silently different default would make
    # the fixture describe another model.
    want = dict(TINY_GPU, hidden_act="silu", tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    got = {k: getattr(config, k) for k in want if k != "rope_theta"}
    got["rope_theta"] = rope_theta_of(config)
    if got != want:
        sys.exit(f"LlamaConfig differs from the tiny-gpu preset:\n  got  {got}\n  want {want}")
    return config


def load_pretrained(path):
    dtype_arg = "dtype" if TV_MAJOR >= 5 else "torch_dtype"
    return LlamaForCausalLM.from_pretrained(path, attn_implementation="eager", **{dtype_arg: torch.float32})


def use_eager(model):
    if getattr(model.config, "_attn_implementation", None) != "eager":
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        else:
            model.config._attn_implementation = "eager"
    print(f"attention implementation: {model.config._attn_implementation}")


# ---- float64 replacements (applied to the float64 copy only) ----------------------------------

CALLS = {"rmsnorm": 0, "rope": 0, "attention": 0}


def rmsnorm64(module):
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))

    def forward(hidden_states):
        CALLS["rmsnorm"] += 1
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return module.weight * (hidden_states * torch.rsqrt(variance + eps))

    return forward


def rope64(head_dim, theta):
    # inv_freq = 1/theta^(2i/d), angle = p*inv_freq, both in float64 (as owlore's double twin).
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))

    def forward(x, position_ids=None, **kwargs):
        CALLS["rope"] += 1
        if position_ids is None:
            position_ids = torch.arange(x.shape[-2], device=x.device)[None]
        angles = position_ids.to(torch.float64)[..., None] * inv_freq.to(x.device)  # (b, T, hd/2)
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    return forward


def eager_attention64(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Causal attention in the input dtype (HF's eager takes the softmax in float32). The fixtures
    have no padding, so the mask is the causal one; HF's mask is not needed."""
    CALLS["attention"] += 1
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # query head h reads kv head h // groups
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    tq, tk = scores.shape[-2], scores.shape[-1]
    causal = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).tril(diagonal=tk - tq)
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), probs


def float64_model(model):
    """A float64 copy of `model` whose RMSNorm, RoPE and eager attention compute in float64."""
    m = copy.deepcopy(model).double()
    theta = rope_theta_of(m.config)
    head_dim = getattr(m.config, "head_dim", None) or m.config.hidden_size // m.config.num_attention_heads
    norms = ropes = 0
    for module in m.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm"):
            module.forward = rmsnorm64(module)
            norms += 1
        elif name.endswith("RotaryEmbedding"):
            module.forward = rope64(head_dim, theta)
            ropes += 1
    if norms != 2 * m.config.num_hidden_layers + 1 or ropes < 1:
        sys.exit(f"expected {2 * m.config.num_hidden_layers + 1} RMSNorm and >= 1 rotary modules, found {norms}, {ropes}")
    return m


def run(model, inputs, targets, fp64):
    """Logits (B,T,V) float64, mean loss, {name: grad float64} of the mean loss."""
    import transformers.models.llama.modeling_llama as modeling_llama

    model.eval()
    model.zero_grad(set_to_none=True)
    saved = getattr(modeling_llama, "eager_attention_forward", None)
    if fp64 and saved is not None:
        modeling_llama.eager_attention_forward = eager_attention64
    for k in CALLS:
        CALLS[k] = 0
    try:
        logits = model(input_ids=inputs, use_cache=False).logits
    finally:
        if saved is not None:
            modeling_llama.eager_attention_forward = saved
    if fp64:
        layers = model.config.num_hidden_layers
        if CALLS["rmsnorm"] != 2 * layers + 1 or CALLS["rope"] < 1:
            sys.exit(f"float64 RMSNorm/RoPE replacements were not used: {CALLS}")
        if CALLS["attention"] != layers:
            # transformers routed attention elsewhere; its eager softmax is float32 (~1e-7
            # relative), still 100x below the tests' bounds, so go on but say so.
            print(f"WARNING: float64 attention replacement was not called ({CALLS}); "
                  "attention probabilities carry float32 rounding")
    logits64 = logits.double()
    logp = torch.log_softmax(logits64, dim=-1)
    kept = targets >= 0
    picked = torch.gather(logp, -1, targets.clamp(min=0)[..., None])[..., 0]
    loss = -(picked * kept).sum() / kept.sum()
    loss.backward()
    grads = {name: p.grad.detach().double().clone() for name, p in model.named_parameters()}
    return logits64.detach(), loss.detach(), grads


def rel(a, b):
    a, b = a.double(), b.double()
    n = b.norm().item()
    d = (a - b).norm().item()
    return d / n if n > 0 else d


def compare_fp32(model32, ref_logits, ref_loss, ref_grads, inputs, targets):
    """Runs the unmodified HF model in float32; returns (and prints) its distance from the reference."""
    logits, loss, grads = run(model32, inputs, targets, fp64=False)
    err = {
        "hf_fp32_logits_rel": rel(logits, ref_logits),
        "hf_fp32_loss_rel": rel(loss, ref_loss),
        "hf_fp32_grad_rel_max": max(rel(grads[k], ref_grads[k]) for k in ref_grads),
    }
    worst = max(ref_grads, key=lambda k: rel(grads[k], ref_grads[k]))
    print(f"unmodified HF float32 vs float64 reference: logits {err['hf_fp32_logits_rel']:.2e}, "
          f"loss {err['hf_fp32_loss_rel']:.2e}, worst gradient {err['hf_fp32_grad_rel_max']:.2e} ({worst})")
    # The float64 replacements must be the same function: float32 rounding only.
    if not (err["hf_fp32_logits_rel"] < 1e-4 and err["hf_fp32_loss_rel"] < 1e-4 and err["hf_fp32_grad_rel_max"] < 1e-3):
        sys.exit("the float64 reference disagrees with unmodified Hugging Face beyond float32 rounding")
    return err


def token_losses(logits, targets):
    """Per-token cross-entropy in float64 (0 where the target is ignored)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    picked = torch.gather(logp, -1, targets.clamp(min=0)[..., None])[..., 0]
    return -(picked * (targets >= 0))


def bf16_errors(model32, ref_logits, ref_loss, ref_grads, inputs, targets):
    """PyTorch's own bf16 error against the float64 reference (DESIGN.md §4): the same model cast
    to bfloat16 (weights, activations, gradients), on the GPU when there is one. owlore's GPU test
    bounds its error by 2x (forward) / 3x (backward) these numbers."""
    import copy

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = copy.deepcopy(model32).to(dev, torch.bfloat16)
    m.config._attn_implementation = "sdpa"
    m.zero_grad(set_to_none=True)
    logits = m(input_ids=inputs.to(dev), use_cache=False).logits
    t = targets.to(dev)
    kept = t >= 0
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), t.clamp(min=0).reshape(-1),
                                           reduction="none").reshape(t.shape) * kept
    loss = ce.sum() / kept.sum()
    loss.backward()
    err = {"bf16_token_loss_rel": rel(ce.detach().cpu(), token_losses(ref_logits, targets)),
           "bf16_loss_rel": rel(loss.detach().cpu(), ref_loss)}
    for name, p in m.named_parameters():
        err["bf16_grad_rel." + name] = rel(p.grad.detach().cpu(), ref_grads[name])
    print(f"PyTorch bf16 vs float64: token losses {err['bf16_token_loss_rel']:.2e}, loss {err['bf16_loss_rel']:.2e}, "
          f"worst gradient {max(v for k, v in err.items() if k.startswith('bf16_grad')):.2e}")
    return err


def f32(t):
    return t.detach().to("cpu", torch.float32).contiguous()


def write(path, tensors, metadata):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            sys.exit(f"{name}: not finite")
    save_file({k: f32(v) for k, v in tensors.items()}, path, metadata={k: str(v) for k, v in metadata.items()})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def common_metadata(kind, extra):
    m = {"kind": kind, "tool": "tools/ref/make_fixtures.py", "transformers": transformers.__version__,
         "torch": torch.__version__, "reference": "float64 CPU; loss = mean over targets >= 0"}
    m.update(extra)
    return m


# ---- --random -------------------------------------------------------------------------------


def make_random(out_dir, seed):
    gen = torch.Generator().manual_seed(seed)
    config = tiny_gpu_config()
    model = LlamaForCausalLM(config).to(torch.float32)
    use_eager(model)
    # Larger than the default init (std 0.02), so gradients are not tiny; norms away from 1.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_(1.0 + 0.1 * noise if p.dim() == 1 else 0.1 * noise)
    model_dir = os.path.join(out_dir, "model")
    model.save_pretrained(model_dir)  # safetensors is the default (and the only format in 5.x)
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        sys.exit(f"{model_dir}: save_pretrained wrote no model.safetensors: {os.listdir(model_dir)}")
    print(f"wrote {model_dir}: {sorted(os.listdir(model_dir))}")
    # Read back what was written, so the fixture describes exactly the saved weights.
    model = load_pretrained(model_dir)
    use_eager(model)

    B, T, V = 2, 33, config.vocab_size
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    inputs, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    drop = torch.rand(B, T, generator=gen) < 0.15
    drop[:, 0] = True  # at least one ignored target per row
    drop[0, T - 1] = True  # and the last position of a row
    targets[drop] = IGNORE

    ref = float64_model(model)
    logits, loss, grads = run(ref, inputs, targets, fp64=True)
    err = compare_fp32(model, logits, loss, grads, inputs, targets)
    err.update(bf16_errors(model, logits, loss, grads, inputs, targets))
    print(f"loss {loss.item():.6f} over {(targets >= 0).sum().item()} targets")

    tensors = {"inputs": inputs.float(), "targets": targets.float(), "logits": logits, "loss": loss.reshape(1)}
    for name, g in grads.items():
        tensors["grad." + name] = g
    write(os.path.join(out_dir, "fixture.safetensors"), tensors,
          common_metadata("random", dict(preset="tiny-gpu", seed=seed, **{k: f"{v:.3e}" for k, v in err.items()})))


# ---- --smollm2 ------------------------------------------------------------------------------


def real_text_ids(n):
    with open(os.path.join(REPO, "tests", "data", "tokenizer_golden.json")) as f:
        ids = json.load(f)["shakespeare"]["ids"]
    if len(ids) < n:
        sys.exit(f"tokenizer_golden.json: only {len(ids)} Shakespeare ids, need {n}")
    return torch.tensor(ids[:n], dtype=torch.int64)


def make_smollm2(hf_dir, out_dir, seed):
    gen = torch.Generator().manual_seed(seed)
    model = load_pretrained(hf_dir)
    use_eager(model)
    cfg = model.config
    V = cfg.vocab_size
    print(f"{hf_dir}: {cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}, vocab {V}, "
          f"tied {cfg.tie_word_embeddings}, rope_theta {rope_theta_of(cfg)}")
    if cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        sys.exit("tie_word_embeddings is set but lm_head is not the embedding matrix")

    B, T = 2, 24
    real = real_text_ids(T + 1)  # row 0: Tiny Shakespeare's first tokens, targets = next tokens
    rand = torch.randint(0, V, (T + 1,), generator=gen)  # row 1: random ids
    tokens = torch.stack([real, rand])
    inputs, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    targets[0, 3] = IGNORE
    targets[1, 0] = IGNORE
    targets[1, 17] = IGNORE

    ref = float64_model(model)
    logits, loss, grads = run(ref, inputs, targets, fp64=True)
    err = compare_fp32(model, logits, loss, grads, inputs, targets)
    print(f"loss {loss.item():.6f} over {(targets >= 0).sum().item()} targets")

    cols = torch.randperm(V, generator=gen)[:512].sort().values
    tensors = {
        "inputs": inputs.float(),
        "targets": targets.float(),
        "logit_cols": cols.float(),  # < 2^24: exact in float32
        "logits": logits[:, :, cols],  # (B, T, 512)
        "lse": torch.logsumexp(logits, dim=-1),  # (B, T) over the whole vocabulary
        "loss": loss.reshape(1),
    }
    # Flat indices reach 49152*576 > 2^24, so the samples are stored as (row, col), each exact.
    for name, g in grads.items():
        g2 = g.reshape(1, -1) if g.dim() == 1 else g
        rows = torch.randint(0, g2.shape[0], (64,), generator=gen)
        cols_ = torch.randint(0, g2.shape[1], (64,), generator=gen)
        tensors["grow." + name] = rows.float()
        tensors["gcol." + name] = cols_.float()
        tensors["gval." + name] = g2[rows, cols_]
        tensors["gnorm." + name] = g.norm().reshape(1)
    write(os.path.join(out_dir, "fixture.safetensors"), tensors,
          common_metadata("smollm2", dict(model="SmolLM2-135M-Instruct Q4_1 GGUF via owlore", seed=seed,
                                          **{k: f"{v:.3e}" for k, v in err.items()})))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--random", metavar="OUT_DIR", help="tiny-gpu random model fixture")
    group.add_argument("--smollm2", nargs=2, metavar=("HF_DIR", "OUT_DIR"), help="SmolLM2-135M fixture")
    parser.add_argument("--seed", type=int, default=1234, help="seed of weights, ids and samples (default 1234)")
    args = parser.parse_args()
    no_tf32()
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if args.random:
        make_random(args.random, args.seed)
    else:
        make_smollm2(args.smollm2[0], args.smollm2[1], args.seed)


if __name__ == "__main__":
    main()
