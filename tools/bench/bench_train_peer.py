#!/usr/bin/env python3
"""The PyTorch peer for training benchmarks: transformers' LlamaForCausalLM in pure bf16 with SDPA
attention, on random tokens of the same shape as the owlore run. Prints one JSON line.

Methods (--method; DESIGN.md §1):
  full    torch AdamW (fused) on everything.
  lisa    every --period K steps --gamma decoder layers are drawn uniformly without replacement,
          every other decoder layer is frozen (requires_grad False); embedding, final norm and
          head always train; one torch AdamW holds the state of whatever has trained and keeps
          it (as the LISA reference code does).
  owlore  the same draw, and the drawn layers' 2-D matrices (q,k,v,o,gate,up,down) are trained
          with GaLore-Adam (below); their norms, the embedding, final norm and head with torch
          AdamW. The draw is UNIFORM unless --layer-probs FILE gives the outlier-weighted
          probabilities (OwLore draws with p_l = D_l / sum D): for speed and memory the draw does
          not matter, only gamma does. A layer that leaves the drawn set loses all its optimizer
          state (owlore's default policy); one that is drawn again starts fresh.
  galore  every decoder layer's 2-D matrices with GaLore-Adam, no sampling.

GaLore-Adam (DESIGN.md §1, as the GaLore reference's AdamW in its non-per-layer mode): the full
bf16 gradient of an m×n matrix is clipped with all the others (clip_grad_norm 1.0), then
projected on its smaller side with a projector from an exact SVD of the fp32 gradient
(torch.linalg.svd, full_matrices=False), refreshed when missing or every --proj-gap T of that
matrix's own steps; fp32 Adam moments of the projected shape; the update is projected back,
scaled by --galore-scale α, and added to the bf16 weight in one rounding. --self-check compares
this update with a float64 numpy transcription of the DESIGN.md formula.

Timing: every step is timed (synchronized wall clock), the first --warmup steps are left out. For
the sampling methods a re-draw is placed on the first timed step (draws at step 0 and at
warmup + k·K), so any window of ≥ 2 steps holds a refresh step (the new layers have no projector)
and steady steps. Reported: steady tokens/s (median of timed steps without a refresh), the median
refresh step and how many matrices it refreshed, and tokens/s amortized over the refresh cycle
(the JSON states the formula). Peak memory is torch.cuda.max_memory_allocated, reset after the
model is built: a random init is made on the GPU in fp32 and then cast to bf16 (LLaMA-2-7B: a
27 GB fp32 transient, fine on an H200, left out of the peak).

usage: bench_train_peer.py --preset smollm2-135m [--model-dir HF_DIR] --batch 16 --seq 512
       bench_train_peer.py --preset llama2-7b --lisa-gamma 2 --lisa-period 5 --grad-ckpt
       bench_train_peer.py --preset llama2-7b --method owlore --gamma 5 --period 50 \\
           --galore-rank 256 --proj-gap 100 --galore-scale 1 --grad-ckpt
       bench_train_peer.py --preset tiny --device cpu --method owlore --gamma 1 --galore-rank 8
       bench_train_peer.py --self-check
"""
import argparse, json, math, platform, statistics, sys, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PRESETS = {
    # layers, d_model, heads, kv heads, ffn, vocab, rope theta, tied
    "smollm2-135m": (30, 576, 9, 3, 1536, 49152, 1e5, True),
    "llama2-7b": (32, 4096, 32, 32, 11008, 32000, 1e4, False),
    "tiny": (2, 64, 4, 2, 128, 256, 1e4, False),  # for checking the script on a CPU
}
GALORE_METHODS = ("owlore", "galore")
SAMPLED_METHODS = ("lisa", "owlore")


# ---------------------------------------------------------------------------------------------
# GaLore-Adam, one matrix (DESIGN.md §1)

def galore_adam_update(weight, grad, state, *, rank, proj_gap, scale, lr, beta1, beta2, eps,
                       weight_decay, compute_dtype=torch.float32):
    """One GaLore-Adam step for one 2-D weight. `state` is this matrix's dict (empty on its first
    step). Returns (delta, refreshed, captured): the full-space change, computed in compute_dtype
    and already added to `weight` (one rounding when the weight is bf16); whether the projector was
    refreshed; and, on a refresh, the captured gradient energy ‖R‖²/‖G‖² as a 0-d tensor."""
    G = grad.to(compute_dtype)
    rows, cols = G.shape
    right = rows >= cols  # project on the smaller side, so the moments are r×n or m×r at most
    r = min(rank, rows, cols)
    refreshed = "projector" not in state or state["step"] % proj_gap == 0
    if refreshed:
        # exact SVD as the reference does; only the top-r vectors are kept
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        state["projector"] = (Vh[:r] if right else U[:, :r]).contiguous()  # Q (r×n) or P (m×r)
        state.setdefault("step", 0)
    proj = state["projector"]
    R = G @ proj.T if right else proj.T @ G
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(R)
        state["exp_avg_sq"] = torch.zeros_like(R)
    # moments survive a refresh (the reference keeps them; only a layer leaving the set drops them)
    state["step"] += 1
    t = state["step"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.mul_(beta1).add_(R, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(R, R, value=1 - beta2)
    N = m / (v.sqrt() + eps)
    step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    update = scale * (N @ proj if right else proj @ N)
    W = weight.to(compute_dtype)
    # W ← W − step·U, then W ← W − lr·wd·W, written as one delta: a difference W_new − W would
    # lose the small update to cancellation against W
    delta = -step_size * update
    if weight_decay:
        delta -= lr * weight_decay * (W + delta)
    weight.copy_(W + delta)  # one rounding when the weight is bf16
    captured = R.square().sum() / G.square().sum() if refreshed else None
    return delta, refreshed, captured


def galore_adam_reference(W, G, state, *, rank, proj_gap, scale, lr, beta1, beta2, eps,
                          weight_decay, sign_like=None):
    """DESIGN.md §1 transcribed in float64 numpy, for --self-check. A singular vector is defined
    up to its sign; sign_like (the torch projector of the same refresh) picks the sign so both
    sides use the same basis — the moments carry over a refresh, so the sign matters there."""
    import numpy as np
    W, G = np.asarray(W, np.float64), np.asarray(G, np.float64)
    m_rows, n_cols = G.shape
    r = min(rank, m_rows, n_cols)
    right = m_rows >= n_cols
    if "proj" not in state or state["t"] % proj_gap == 0:
        U, _, Vh = np.linalg.svd(G, full_matrices=False)
        proj = Vh[:r] if right else U[:, :r]
        if sign_like is not None:
            like = np.asarray(sign_like, np.float64)
            # per singular vector: flip when it points away from the torch one
            dots = (proj * like).sum(axis=1 if right else 0)
            signs = np.where(dots < 0, -1.0, 1.0)
            proj = proj * (signs[:, None] if right else signs[None, :])
        state["proj"] = proj
        state.setdefault("t", 0)
    proj = state["proj"]
    R = G @ proj.T if right else proj.T @ G
    if state.get("m") is None:
        state["m"], state["v"] = np.zeros_like(R), np.zeros_like(R)
    state["t"] += 1
    t = state["t"]
    state["m"] = beta1 * state["m"] + (1 - beta1) * R
    state["v"] = beta2 * state["v"] + (1 - beta2) * R * R
    N = state["m"] / (np.sqrt(state["v"]) + eps)
    step = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    Uf = scale * (N @ proj if right else proj @ N)
    W1 = W - step * Uf
    W2 = W1 - lr * weight_decay * W1
    return W2 - W, W2


def self_check():
    """Three GaLore-Adam steps in a row on random gradients, for a tall (right projection) and a
    wide (left projection) and a square matrix, proj_gap 2 so the steps are refresh, plain,
    refresh. Compares the torch update (fp32, as the peer runs it, and the same code in float64)
    with the numpy float64 reference. The float64 run checks the formula (~1e-13). The fp32 run's
    residual is conditioning, not the code: singular vectors are accurate to about eps·σ1/gap, and
    Adam's first step is sign-like, so an entry of R within ~1e-5 of zero turns fp32 rounding into
    a large change of its step (about one seed in ten of these shapes has one: 1e-4). The seed is
    fixed and the data are made on the CPU, so the result is the same run to run."""
    import numpy as np
    hyper = dict(rank=6, proj_gap=2, scale=0.25, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6,
                 weight_decay=0.1)
    gen = torch.Generator().manual_seed(1234)

    def gradient_like(shape):
        # random singular vectors, a spectrum that decays like a gradient's (8 strong directions
        # 1.5 apart, then noise): Adam's elementwise step is not rotation invariant, so every one
        # of the top-r vectors must be well defined for fp32 and float64 to agree to 1e-5; white
        # Gaussian G, whose r-th gaps are ~2% of σ1, leave 0.5–1.2e-5 of fp32 SVD error
        k = 8
        U, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=torch.float64))
        s = 12.0 - 1.5 * torch.arange(k, dtype=torch.float64)
        noise = 0.02 * torch.randn(shape, generator=gen, dtype=torch.float64)
        return U @ torch.diag(s) @ V.T + noise

    worst = {"float32": 0.0, "float64": 0.0}
    lines = []
    for shape in ((48, 20), (20, 48), (37, 37)):
        W0 = torch.randn(shape, generator=gen, dtype=torch.float64)
        grads = [gradient_like(shape) for _ in range(3)]
        for dtype in (torch.float32, torch.float64):
            name = str(dtype).split(".")[1]
            W = W0.to(dtype).clone()
            state, ref_state, W_ref = {}, {}, W0.numpy().copy()
            for i, G in enumerate(grads):
                delta, refreshed, _ = galore_adam_update(W, G.to(dtype), state, compute_dtype=dtype,
                                                          **hyper)
                ref_delta, W_ref = galore_adam_reference(
                    W_ref, G.numpy(), ref_state,
                    sign_like=state["projector"].double().numpy() if refreshed else None, **hyper)
                err = np.linalg.norm(delta.double().numpy() - ref_delta) / np.linalg.norm(ref_delta)
                worst[name] = max(worst[name], err)
                lines.append(f"{shape[0]}x{shape[1]} {name} step {i + 1} "
                             f"{'refresh' if refreshed else 'plain  '} rel err {err:.2e}")
    bound = {"float32": 1e-5, "float64": 1e-10}
    ok = all(worst[k] <= bound[k] for k in worst)
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"self_check": "galore-adam update vs float64 numpy (DESIGN.md §1)",
                      "max_rel_err": worst, "bound": bound, "ok": ok}))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# Benchmark

def resolve_method(a):
    """--method wins; without it, the old flags keep their meaning: --lisa-gamma G is lisa, and
    with --galore-rank R it becomes owlore; --galore-rank alone is galore."""
    if a.method is None:
        a.method = ("owlore" if a.gamma and a.galore_rank else "lisa" if a.gamma
                    else "galore" if a.galore_rank else "full")
    if a.method in GALORE_METHODS and a.galore_rank <= 0:
        sys.exit(f"--method {a.method} needs --galore-rank > 0")
    if a.method not in GALORE_METHODS and a.galore_rank:
        sys.exit(f"--galore-rank is for --method owlore or galore, not {a.method}")
    if a.method in SAMPLED_METHODS and a.gamma <= 0:
        sys.exit(f"--method {a.method} needs --gamma > 0")
    if a.period is None:
        a.period = 50 if a.method == "owlore" else 5  # OwLore's K; the old --lisa-period default
    if a.layer_probs and a.method not in SAMPLED_METHODS:
        sys.exit("--layer-probs is for --method lisa or owlore")


def load_layer_probs(path, n_layers):
    """A JSON list of per-layer weights (OwLore's D_l, any positive scale), or the same numbers
    separated by white space."""
    text = open(path).read()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = [float(x) for x in text.split()]
    if len(values) != n_layers or min(values) < 0 or sum(values) <= 0:
        sys.exit(f"--layer-probs {path}: expected {n_layers} non-negative weights, got {len(values)}")
    return torch.tensor(values, dtype=torch.float64)


def build_model(a, device):
    if a.model_dir:
        model = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    else:
        L, d, h, kv, ffn, V, theta, tied = PRESETS[a.preset]
        cfg = LlamaConfig(hidden_size=d, intermediate_size=ffn, num_hidden_layers=L, num_attention_heads=h,
                          num_key_value_heads=kv, vocab_size=V, rope_theta=theta, tie_word_embeddings=tied,
                          max_position_embeddings=max(a.seq, 2048))
        cfg._attn_implementation = "sdpa"
        with torch.device(device):  # initialize on the GPU: a 7B init on the CPU takes minutes
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model.to(device).train()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--model-dir", default=None, help="load these weights instead of a random init")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to check the script (no memory figure)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0, help="decoupled, all trained tensors")
    ap.add_argument("--eps", type=float, default=1e-6, help="Adam epsilon (DESIGN.md §1)")
    ap.add_argument("--method", default=None, choices=["full", "lisa", "owlore", "galore"],
                    help="default: lisa with --gamma, owlore with --gamma and --galore-rank, "
                         "galore with --galore-rank alone, else full")
    ap.add_argument("--gamma", "--lisa-gamma", dest="gamma", type=int, default=0,
                    help="lisa/owlore: decoder layers trained at once")
    ap.add_argument("--period", "--lisa-period", dest="period", type=int, default=None,
                    help="lisa/owlore: steps between draws (default 5 for lisa, 50 for owlore)")
    ap.add_argument("--layer-probs", default=None,
                    help="lisa/owlore: JSON list of per-layer weights for the draw (default uniform)")
    ap.add_argument("--galore-rank", type=int, default=0, help="GaLore rank r (0: off)")
    ap.add_argument("--proj-gap", type=int, default=200, help="GaLore: refresh every T own steps")
    ap.add_argument("--galore-scale", type=float, default=0.25, help="GaLore: update scale alpha")
    ap.add_argument("--self-check", action="store_true",
                    help="check the GaLore-Adam update against float64 numpy and exit")
    a = ap.parse_args()
    if a.self_check:
        return self_check()
    resolve_method(a)
    device = torch.device(a.device)
    on_cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(a, device)
    layers = model.model.layers
    n_layers = len(layers)
    if a.gamma > n_layers:
        sys.exit(f"--gamma {a.gamma} > {n_layers} decoder layers")
    rng = torch.Generator().manual_seed(0)
    probs = load_layer_probs(a.layer_probs, n_layers) if a.layer_probs else None

    # which tensors GaLore trains: the 2-D matrices of the decoder layers
    galore_params = {}  # param -> layer index
    if a.method in GALORE_METHODS:
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                if p.dim() == 2:
                    galore_params[p] = i
    galore_state = {}  # param -> its GaLore-Adam state dict; dropped when its layer leaves the set
    if a.grad_ckpt:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    adam_params = [p for p in model.parameters() if p not in galore_params]
    opt = torch.optim.AdamW(adam_params, lr=a.lr, eps=a.eps, weight_decay=a.weight_decay, fused=on_cuda)
    hyper = dict(rank=a.galore_rank, proj_gap=a.proj_gap, scale=a.galore_scale, lr=a.lr, beta1=0.9,
                 beta2=0.999, eps=a.eps, weight_decay=a.weight_decay)

    active = set(range(n_layers))

    def draw_layers():
        nonlocal active
        if probs is None:
            chosen = set(torch.randperm(n_layers, generator=rng)[: a.gamma].tolist())
        else:  # successive weighted draws without replacement, as numpy's choice(replace=False, p)
            chosen = set(torch.multinomial(probs, a.gamma, replacement=False, generator=rng).tolist())
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                p.requires_grad_(i in chosen)
                if a.method == "owlore" and i in active and i not in chosen:
                    # owlore releases a leaving layer's state (lisa keeps it, as its reference does)
                    galore_state.pop(p, None)
                    opt.state.pop(p, None)
        active = chosen

    def is_draw_step(step):
        # a draw at step 0, then on the first timed step and every K steps after it
        return step == 0 or (step >= a.warmup and (step - a.warmup) % a.period == 0)

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    tokens = torch.randint(0, model.config.vocab_size, (a.batch, a.seq + 1), device=device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    steps = []  # per timed step: (seconds, matrices refreshed)
    captured = []
    for step in range(a.warmup + a.steps):
        if a.method in SAMPLED_METHODS and is_draw_step(step):
            draw_layers()
        sync()
        t0 = time.perf_counter()
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        # clip the full gradients, GaLore's included, before any update (GaLore's non-per-layer mode)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        refreshed = 0
        with torch.no_grad():
            for p in galore_params:
                if p.grad is None:
                    continue
                _, did_refresh, energy = galore_adam_update(p, p.grad, galore_state.setdefault(p, {}), **hyper)
                p.grad = None
                if did_refresh:
                    refreshed += 1
                    if step >= a.warmup:
                        captured.append(energy)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= a.warmup:
            steps.append((time.perf_counter() - t0, refreshed))

    tokens_per_step = a.batch * a.seq
    peer = ("transformers LlamaForCausalLM bf16 + SDPA + torch AdamW" + ("(fused)" if on_cuda else "") +
            (" + gradient checkpointing" if a.grad_ckpt else ""))
    if a.method in SAMPLED_METHODS:
        peer += f" + {a.method} gamma {a.gamma} period {a.period} ({'weighted' if probs is not None else 'uniform'} draw)"
    if a.method in GALORE_METHODS:
        peer += f" + GaLore-Adam r {a.galore_rank} T {a.proj_gap} alpha {a.galore_scale} (exact SVD)"
    out = {"peer": peer, "method": a.method,
           "card": torch.cuda.get_device_name() if on_cuda else f"cpu {platform.processor() or platform.machine()}",
           "preset": a.model_dir or a.preset, "batch": a.batch, "seq": a.seq, "grad_ckpt": a.grad_ckpt,
           "warmup": a.warmup, "steps": a.steps}
    if a.method in SAMPLED_METHODS:
        out.update(gamma=a.gamma, period=a.period,
                   draw=f"weighted by {a.layer_probs}" if probs is not None else
                   "uniform without replacement (OwLore draws outlier-weighted; the same cost)",
                   draw_steps="0, then warmup + k*period (a draw on the first timed step)")
    if a.method in GALORE_METHODS:
        steady = [s for s, n in steps if n == 0]
        refresh = [(s, n) for s, n in steps if n > 0]
        steady_s = statistics.median(steady) if steady else None
        refresh_s = statistics.median(s for s, _ in refresh) if refresh else None
        # refresh steps per cycle: owlore refreshes a drawn layer when it is drawn (its state is
        # new) and again every T of its own steps inside the period; galore every T steps. (A layer
        # drawn twice in a row keeps its state and skips the draw's refresh; with gamma << layers
        # that is rare, and the formula ignores it.)
        if a.method == "owlore":
            cycle, per_cycle = a.period, math.ceil(a.period / a.proj_gap)
        else:
            cycle, per_cycle = a.proj_gap, 1
        amortized_s = ((cycle - per_cycle) * steady_s + per_cycle * refresh_s) / cycle if steady and refresh else None
        out.update(
            galore={"rank": a.galore_rank, "proj_gap": a.proj_gap, "scale": a.galore_scale, "eps": a.eps,
                    "betas": [0.9, 0.999], "weight_decay": a.weight_decay,
                    "projector": "exact torch.linalg.svd of the fp32 gradient, full_matrices=False, smaller side",
                    "moments": "fp32, projected shape", "weights": "bf16, one rounding per update"},
            step_s=steady_s, tokens_per_s=tokens_per_step / steady_s if steady else None,
            steady_steps_timed=len(steady),
            refresh_step_s=refresh_s, refresh_steps_timed=len(refresh),
            refresh_matrices=statistics.median(n for _, n in refresh) if refresh else None,
            # a draw that keeps a layer refreshes fewer matrices: this is the cost of one
            refresh_s_per_matrix=((refresh_s - steady_s) / statistics.median(n for _, n in refresh)
                                  if steady and refresh else None),
            captured_energy_mean=(torch.stack(captured).mean().item() if captured else None),
            amortized={"formula": f"tokens_per_step * C / ((C - n) * step_s + n * refresh_step_s), "
                                  f"C = {cycle} steps per cycle, n = {per_cycle} refresh step(s) in it",
                       "cycle_steps": cycle, "refresh_steps_per_cycle": per_cycle,
                       "step_s": amortized_s,
                       "tokens_per_s": tokens_per_step / amortized_s if amortized_s else None})
        if not steady:
            out["warning"] = "no steady step in the timed window: needs --steps >= 2 and --proj-gap >= 2"
        elif not refresh:
            out["warning"] = ("no refresh step in the timed window: " +
                              ("galore refreshes at steps 0, T, 2T...: make warmup <= k*T < warmup + steps"
                               if a.method == "galore" else "the draw on the first timed step kept every layer"))
    else:
        step_s = statistics.median(s for s, _ in steps)
        out.update(step_s=step_s, tokens_per_s=tokens_per_step / step_s)
    out.update(step_times_s=[[round(s, 4), n] for s, n in steps],
               peak_memory_bytes=torch.cuda.max_memory_allocated() if on_cuda else None,
               peak_memory_note="torch.cuda.max_memory_allocated, reset after the model is built (the fp32 "
                                "init transient, 27 GB at 7B, is left out)" if on_cuda else "not measured on cpu",
               # What the process holds on the device at the end (context, cuBLAS workspaces and the
               # caching allocator's reserve included): comparable with owlore's peak, which is
               # the device memory in use (cudaMemGetInfo), CUDA context included.
               max_memory_reserved_bytes=torch.cuda.max_memory_reserved() if on_cuda else None,
               device_used_bytes=(lambda free_total: free_total[1] - free_total[0])(torch.cuda.mem_get_info())
               if on_cuda else None,
               torch=torch.__version__, transformers=__import__("transformers").__version__,
               final_loss=loss.item())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
