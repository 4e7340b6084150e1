// CPU twins of every LLaMA op: the references the CUDA kernels are tested against, and the
// engine of the CPU trainer (tiny models in CI). Same names as the kernels with a `_ref`
// suffix and the same argument order: outputs first, then inputs, then weights, then sizes.
// Host pointers, float math, written for clarity, not speed.
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

constexpr int kIgnoreIndex = -100;

// ---- token embedding ------------------------------------------------------------------
// out[n,:] = wte[tokens[n],:];  dwte[tokens[n],:] += dout[n,:]  (in token order: deterministic)
void encoder_forward_ref(float* out /*(N,C)*/, const int* tokens /*(N)*/, const float* wte /*(V,C)*/,
                         int N, int C, int V);
void encoder_backward_ref(float* dwte /*(V,C) +=*/, const float* dout /*(N,C)*/, const int* tokens /*(N)*/,
                          int N, int C, int V);

// ---- RMSNorm --------------------------------------------------------------------------
// y = x * r * w with r = 1/sqrt(mean(x^2) + eps);  rstd saves r for the backward.
// dx = r * (g*w) - r^3/C * x * sum(g*w*x);  dw += sum_n g * x * r
void rmsnorm_forward_ref(float* out /*(N,C)*/, float* rstd /*(N)*/, const float* inp /*(N,C)*/,
                         const float* weight /*(C)*/, int N, int C, float eps);
void rmsnorm_backward_ref(float* dinp /*(N,C) =*/, float* dweight /*(C) += or null*/, const float* dout /*(N,C)*/,
                          const float* inp /*(N,C)*/, const float* weight /*(C)*/, const float* rstd /*(N)*/,
                          int N, int C);

// ---- residual add ---------------------------------------------------------------------
// out = a + b;  da = dout, db = dout  (out may alias a or b)
void residual_forward_ref(float* out /*(n)*/, const float* a /*(n)*/, const float* b /*(n)*/, int64_t n);
void residual_backward_ref(float* da /*(n) =*/, float* db /*(n) =*/, const float* dout /*(n)*/, int64_t n);

// ---- rotary position embedding (Hugging Face rotate-half convention) --------------------
// For each of the first n_heads heads of every row (row_stride floats apart), with
// position p = pos_offset + t and f_i = theta^(-2i/head_dim), i < head_dim/2:
//   y[i] = x[i] cos(p f_i) - x[i+h/2] sin(p f_i);  y[i+h/2] = x[i+h/2] cos(p f_i) + x[i] sin(p f_i)
// Backward is the inverse rotation. Only the rotated heads are written; out may alias inp.
void rope_forward_ref(float* out /*(B,T,row_stride)*/, const float* inp /*(B,T,row_stride)*/, int B, int T,
                      int n_heads, int head_dim, int row_stride, float theta, int pos_offset);
void rope_backward_ref(float* dinp /*(B,T,row_stride)*/, const float* dout /*(B,T,row_stride)*/, int B, int T,
                       int n_heads, int head_dim, int row_stride, float theta, int pos_offset);

// ---- causal grouped-query attention ----------------------------------------------------
// qkv rows: [Hq query heads | Hkv key heads | Hkv value heads] of head_dim each; query head h
// reads kv head h / (Hq/Hkv). S = q k^T / sqrt(head_dim), causal mask, P = softmax(S),
// out = P v; lse = log-sum-exp of each row of S (saved for the backward).
// Backward: D = rowsum(dout*out), dS = P*(dout v^T - D); dq = dS k/sqrt(d); dk = dS^T q/sqrt(d); dv = P^T dout.
void attention_forward_ref(float* out /*(B,T,Hq*hd)*/, float* lse /*(B,Hq,T)*/, const float* qkv /*(B,T,(Hq+2Hkv)*hd)*/,
                           int B, int T, int Hq, int Hkv, int head_dim);
void attention_backward_ref(float* dqkv /*(B,T,(Hq+2Hkv)*hd) =*/, const float* dout /*(B,T,Hq*hd)*/,
                            const float* qkv /*(B,T,(Hq+2Hkv)*hd)*/, const float* out /*(B,T,Hq*hd)*/,
                            const float* lse /*(B,Hq,T)*/, int B, int T, int Hq, int Hkv, int head_dim);

// ---- SwiGLU ---------------------------------------------------------------------------
// out = silu(gate) * up with gate_up rows [gate (F) | up (F)], silu(x) = x*sigmoid(x).
// dgate = dout*up*s*(1 + gate*(1-s)), dup = dout*silu(gate), s = sigmoid(gate)
void swiglu_forward_ref(float* out /*(N,F)*/, const float* gate_up /*(N,2F)*/, int N, int F);
void swiglu_backward_ref(float* dgate_up /*(N,2F) =*/, const float* dout /*(N,F)*/, const float* gate_up /*(N,2F)*/,
                         int N, int F);

// ---- linear layer (no bias in LLaMA) ----------------------------------------------------
// out = inp W^T;  dinp = dout W;  dW += dout^T inp.  dinp may be null (nothing below needs it).
void matmul_forward_ref(float* out /*(N,OC)*/, const float* inp /*(N,IC)*/, const float* weight /*(OC,IC)*/,
                        int N, int IC, int OC);
void matmul_backward_ref(float* dinp /*(N,IC) = or null*/, float* dweight /*(OC,IC) += or null*/,
                         const float* dout /*(N,OC)*/, const float* inp /*(N,IC)*/, const float* weight /*(OC,IC)*/,
                         int N, int IC, int OC);

// ---- LM head + softmax cross-entropy, fused ---------------------------------------------
// logits = x W^T (never stored whole: one row at a time); loss_n = logsumexp(logits) - logits[t_n]
// (0 for ignored targets). Backward with dloss_n = loss_scale for every kept token:
// dlogits = loss_scale * (softmax - onehot); dx = dlogits W; dW += dlogits^T x.
void lm_head_ce_forward_ref(float* losses /*(N)*/, const float* inp /*(N,C)*/, const float* weight /*(V,C)*/,
                            const int* targets /*(N)*/, int N, int C, int V);
void lm_head_ce_backward_ref(float* dinp /*(N,C) =*/, float* dweight /*(V,C) += or null*/, const float* inp /*(N,C)*/,
                             const float* weight /*(V,C)*/, const int* targets /*(N)*/, float loss_scale,
                             int N, int C, int V);

// ---- AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW formula) --------------------
// g = grad * grad_scale (the clip factor); p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps), with t = step >= 1.
void adamw_ref(float* param /*(n)*/, float* m /*(n)*/, float* v /*(n)*/, const float* grad /*(n)*/, int64_t n,
               float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale);

// Sum of squares in double (the global gradient norm for clipping is sqrt of the total).
double sum_squares_ref(const float* x /*(n)*/, int64_t n);

}  // namespace owlore
