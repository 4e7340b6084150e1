// CPU twins of every LLaMA op: the references the CUDA kernels are tested against, and the
// engine of the CPU trainer (tiny models in CI). Same names as the kernels with a `_ref`
// suffix and the same argument order: outputs first, then inputs, then weights, then sizes.
// Host pointers; templates on the scalar type Real: float is the reference the kernels are
// tested against (and the CPU trainer's type), double serves the finite-difference checks.
// Explicitly instantiated for float and double in the .cpp files. Written for clarity, not speed.
//
// Conventions shared with the kernels:
//  - Token-major activations: a (B,T,X) tensor is N = B*T rows of X.
//  - Input gradients overwrite (=); weight gradients accumulate (+=) and may be nullptr when
//    the weight is frozen (then no weight-gradient work is done at all).
//  - Targets < 0 are ignored by the loss (Hugging Face uses -100).
//  - qkv rows are packed [q heads | k heads | v heads] because wq, wk, wv are stored back to
//    back in the weight arena and computed by one GEMM; likewise gate_up rows are [gate | up].
#pragma once
#include <cstdint>

namespace owlore {

// ---- token embedding ------------------------------------------------------------------
// out[n,:] = wte[tokens[n],:];  dwte[tokens[n],:] += dout[n,:]  (in token order: deterministic)
template <typename Real>
void encoder_forward_ref(Real* out /*(N,C)*/, const int* tokens /*(N)*/, const Real* wte /*(V,C)*/,
                         int N, int C, int V);
template <typename Real>
void encoder_backward_ref(Real* dwte /*(V,C) +=*/, const Real* dout /*(N,C)*/, const int* tokens /*(N)*/,
                          int N, int C, int V);

// ---- RMSNorm --------------------------------------------------------------------------
// y = x * r * w with r = 1/sqrt(mean(x^2) + eps);  rstd saves r for the backward.
// dx += r * (g*w) - r^3/C * x * sum(g*w*x);  dw += sum_n g * x * r  (dx: the residual stream's gradient)
template <typename Real>
void rmsnorm_forward_ref(Real* out /*(N,C)*/, Real* rstd /*(N)*/, const Real* inp /*(N,C)*/,
                         const Real* weight /*(C)*/, int N, int C, Real eps);
template <typename Real>
void rmsnorm_backward_ref(Real* dinp /*(N,C) +=*/, Real* dweight /*(C) += or null*/, const Real* dout /*(N,C)*/,
                          const Real* inp /*(N,C)*/, const Real* weight /*(C)*/, const Real* rstd /*(N)*/,
                          int N, int C);

// ---- residual add ---------------------------------------------------------------------
// out = a + b;  da = dout, db = dout  (out may alias a or b)
template <typename Real>
void residual_forward_ref(Real* out /*(n)*/, const Real* a /*(n)*/, const Real* b /*(n)*/, int64_t n);

// ---- rotary position embedding (Hugging Face rotate-half convention) --------------------
// For each of the first n_heads heads of every row (row_stride floats apart), with
// position p = pos_offset + t and f_i = inv_freq[i], i < head_dim/2 (rope_inv_freq() of the model
// config: theta^(-2i/head_dim), rescaled under rope_scaling):
//   y[i] = x[i] cos(p f_i) - x[i+h/2] sin(p f_i);  y[i+h/2] = x[i+h/2] cos(p f_i) + x[i] sin(p f_i)
// Backward is the inverse rotation. Only the rotated heads are written; out may alias inp.
// inv_freq is double for both Reals: the float twin rounds each f_i to float, as the GPU does.
template <typename Real>
void rope_forward_ref(Real* out /*(B,T,row_stride)*/, const Real* inp /*(B,T,row_stride)*/, int B, int T,
                      int n_heads, int head_dim, int row_stride, const double* inv_freq /*(head_dim/2)*/,
                      int pos_offset);
template <typename Real>
void rope_backward_ref(Real* dinp /*(B,T,row_stride)*/, const Real* dout /*(B,T,row_stride)*/, int B, int T,
                       int n_heads, int head_dim, int row_stride, const double* inv_freq /*(head_dim/2)*/,
                       int pos_offset);

// ---- causal grouped-query attention ----------------------------------------------------
// qkv rows: [Hq query heads | Hkv key heads | Hkv value heads] of head_dim each; query head h
// reads kv head h / (Hq/Hkv). S = q k^T / sqrt(head_dim), causal mask, P = softmax(S),
// out = P v; lse = log-sum-exp of each row of S (saved for the backward).
// Backward: D = rowsum(dout*out), dS = P*(dout v^T - D); dq = dS k/sqrt(d); dk = dS^T q/sqrt(d); dv = P^T dout.
template <typename Real>
void attention_forward_ref(Real* out /*(B,T,Hq*hd)*/, Real* lse /*(B,Hq,T)*/, const Real* qkv /*(B,T,(Hq+2Hkv)*hd)*/,
                           int B, int T, int Hq, int Hkv, int head_dim);
template <typename Real>
void attention_backward_ref(Real* dqkv /*(B,T,(Hq+2Hkv)*hd) =*/, const Real* dout /*(B,T,Hq*hd)*/,
                            const Real* qkv /*(B,T,(Hq+2Hkv)*hd)*/, const Real* out /*(B,T,Hq*hd)*/,
                            const Real* lse /*(B,Hq,T)*/, int B, int T, int Hq, int Hkv, int head_dim);

// ---- SwiGLU ---------------------------------------------------------------------------
// out = silu(gate) * up with gate_up rows [gate (F) | up (F)], silu(x) = x*sigmoid(x).
// dgate = dout*up*s*(1 + gate*(1-s)), dup = dout*silu(gate), s = sigmoid(gate)
template <typename Real>
void swiglu_forward_ref(Real* out /*(N,F)*/, const Real* gate_up /*(N,2F)*/, int N, int F);
template <typename Real>
void swiglu_backward_ref(Real* dgate_up /*(N,2F) =*/, const Real* dout /*(N,F)*/, const Real* gate_up /*(N,2F)*/,
                         int N, int F);

// ---- linear layer (no bias in LLaMA) ----------------------------------------------------
// out = inp W^T;  dinp = dout W;  dW += dout^T inp.  dinp may be null (nothing below needs it).
template <typename Real>
void matmul_forward_ref(Real* out /*(N,OC)*/, const Real* inp /*(N,IC)*/, const Real* weight /*(OC,IC)*/,
                        int N, int IC, int OC);
template <typename Real>
void matmul_backward_ref(Real* dinp /*(N,IC) = or null*/, Real* dweight /*(OC,IC) += or null*/,
                         const Real* dout /*(N,OC)*/, const Real* inp /*(N,IC)*/, const Real* weight /*(OC,IC)*/,
                         int N, int IC, int OC);

// ---- LM head + softmax cross-entropy, fused ---------------------------------------------
// logits = x W^T (never stored whole: one row at a time); loss_n = logsumexp(logits) - logits[t_n]
// (0 for ignored targets). Backward with dloss_n = loss_scale for every kept token:
// dlogits = loss_scale * (softmax - onehot); dx = dlogits W; dW += dlogits^T x.
template <typename Real>
void lm_head_ce_forward_ref(Real* losses /*(N)*/, const Real* inp /*(N,C)*/, const Real* weight /*(V,C)*/,
                            const int* targets /*(N)*/, int N, int C, int V);
template <typename Real>
void lm_head_ce_backward_ref(Real* dinp /*(N,C) =*/, Real* dweight /*(V,C) += or null*/, const Real* inp /*(N,C)*/,
                             const Real* weight /*(V,C)*/, const int* targets /*(N)*/, Real loss_scale,
                             int N, int C, int V);

// ---- AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW formula) --------------------
// g = grad * grad_scale (the clip factor); p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps), with t = step >= 1.
template <typename Real>
void adamw_ref(Real* param /*(n)*/, Real* m /*(n)*/, Real* v /*(n)*/, const Real* grad /*(n)*/, int64_t n,
               Real lr, Real beta1, Real beta2, Real eps, Real weight_decay, int step, Real grad_scale);

// Sum of squares in double (the global gradient norm for clipping is sqrt of the total).
template <typename Real>
double sum_squares_ref(const Real* x /*(n)*/, int64_t n);

}  // namespace owlore
