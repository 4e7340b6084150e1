// LM head + softmax cross-entropy, fused and chunked over tokens (the B*T*V logits never exist).
// For each chunk of up to chunk_tokens rows:
//   logits (chunk,V) = x W^T                         (Matmul::forward into the workspace, bf16)
//   loss_n = logsumexp(logits_n) - logits_n[t_n]      (fp32; 0 for t_n < 0; NaN for t_n >= V)
//   logits_n <- loss_scale * (softmax(logits_n) - onehot(t_n))   (in place; zero row if ignored)
//   dx_chunk = dlogits W;  dW += dlogits^T x_chunk     (Matmul::backward; dW nullptr: frozen head)
// Workspace rule: lm_head_ce_workspace_bytes(chunk_tokens, V) = chunk_tokens * V * 2 bytes (plus
// the Matmul's own 32 MiB). chunk_tokens trades memory for GEMM efficiency: M = chunk_tokens rows
// per GEMM; 1024-4096 keeps the GEMMs near the full-size rate (bench: docs/bench/kernels.md).
// Precision: as PyTorch bf16 training: logits and dlogits bf16 (GEMM accumulates in fp32), the
// softmax and the loss in fp32. A bf16 dW accumulates once per chunk (each chunk adds one bf16
// rounding); prefer an fp32 dW for the head.
// CE kernel: one block per row, an online (max, sum) pass over the row in fp32 (one rescale per
// 8 logits, __expf), then a second pass (the row, just read, is re-read from L2) that overwrites
// it with dlogits.
// Measured on H200, 8192 tokens, forward+backward with fp32 dW: LLaMA-2-7B head 9.8 ms with chunk
// 8192 (88% of the 8192^3 GEMM rate), 10.6 ms with chunk 2048 (81%); SmolLM2 head 2.6 / 2.8 ms
// (73% / 67%: K = 576 GEMMs run below the large-GEMM rate). PyTorch with materialized logits:
// 12.9 / 7.1 ms. docs/bench/kernels.md.
#pragma once
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/matmul.cuh"

namespace owlore {
namespace lm_head_ce_detail {

static __device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// (max, sum of exp(x - max)) over the block; every thread gets the result.
static __device__ __forceinline__ void block_reduce_online(float& m, float& s) {
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    online_merge(m, s, m2, s2);
  }
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = -INFINITY;
  s = 0.0f;
  for (int i = 0; i < n_warps; i++) online_merge(m, s, sm[i], ss[i]);
}

template <bool VEC>
static __global__ void ce_kernel(float* __restrict__ losses /*(rows)*/, bf16* __restrict__ logits /*(rows,V)*/,
                                 const int* __restrict__ targets /*(rows)*/, float loss_scale, int V,
                                 bool write_grad) {
  const int64_t row = blockIdx.x;
  bf16* x = logits + row * V;
  const int t = targets[row];
  const bool ignored = t < 0;
  float target_logit = 0.0f;
  if (threadIdx.x == 0 && !ignored && t < V) target_logit = __bfloat162float(x[t]);
  float m = -INFINITY, s = 0.0f;
  if (!ignored) {
    if constexpr (VEC) {
      // one rescale per pack of 8, one __expf per element
      for (int i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
        const Pack128<bf16> v = load128(x + i);
        float f[8], pack_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) {
          f[j] = __bfloat162float(v[j]);
          pack_max = fmaxf(pack_max, f[j]);
        }
        if (pack_max > m) {
          s *= __expf(m - pack_max);
          m = pack_max;
        }
#pragma unroll
        for (int j = 0; j < 8; j++) s += __expf(f[j] - m);
      }
    } else {
      for (int i = threadIdx.x; i < V; i += blockDim.x) online_merge(m, s, __bfloat162float(x[i]), 1.0f);
    }
  }
  block_reduce_online(m, s);  // also the barrier before anyone overwrites x[t]
  const float lse = m + logf(s);
  if (threadIdx.x == 0) losses[row] = ignored ? 0.0f : (t < V ? lse - target_logit : NAN);
  if (!write_grad) return;
  if constexpr (VEC) {
    for (int i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
      Pack128<bf16> v = load128(x + i);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const float p = ignored ? 0.0f : loss_scale * (__expf(__bfloat162float(v[j]) - lse) - (i + j == t ? 1.0f : 0.0f));
        v[j] = __float2bfloat16_rn(p);
      }
      store128(x + i, v);
    }
  } else {
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      const float p = ignored ? 0.0f : loss_scale * (__expf(__bfloat162float(x[i]) - lse) - (i == t ? 1.0f : 0.0f));
      x[i] = __float2bfloat16_rn(p);
    }
  }
}

inline void ce_launch(float* losses, bf16* logits, const int* targets, float loss_scale, int rows, int V,
                      bool write_grad, cudaStream_t stream) {
  const bool vec = V % 8 == 0 && is_aligned16(logits);
  if (vec)
    ce_kernel<true><<<rows, 512, 0, stream>>>(losses, logits, targets, loss_scale, V, write_grad);
  else
    ce_kernel<false><<<rows, 512, 0, stream>>>(losses, logits, targets, loss_scale, V, write_grad);
  CUDA_CHECK_LAUNCH();
}

template <typename TW>
inline void forward_backward_impl(float* losses, bf16* dinp, TW* dweight, bf16* workspace, size_t workspace_bytes,
                                  const bf16* inp, const bf16* weight, const int* targets, float loss_scale, int N,
                                  int C, int V, int chunk_tokens, Matmul& matmul, cudaStream_t stream) {
  NvtxRange range("lm_head_ce_forward_backward");
  KERNEL_REQUIRE(N > 0 && C > 0 && V > 0 && chunk_tokens > 0, "lm_head_ce_forward_backward", "sizes must be positive");
  KERNEL_REQUIRE(losses && workspace && inp && weight && targets, "lm_head_ce_forward_backward", "null pointer");
  KERNEL_REQUIRE(workspace_bytes >= (size_t)chunk_tokens * V * sizeof(bf16), "lm_head_ce_forward_backward",
                 "workspace smaller than lm_head_ce_workspace_bytes(chunk_tokens, V)");
  for (int n0 = 0; n0 < N; n0 += chunk_tokens) {
    const int rows = std::min(chunk_tokens, N - n0);
    const bf16* x = inp + (int64_t)n0 * C;
    matmul.forward(workspace, x, weight, rows, C, V, stream);
    ce_launch(losses + n0, workspace, targets + n0, loss_scale, rows, V, true, stream);
    matmul.backward(dinp ? dinp + (int64_t)n0 * C : nullptr, dweight, workspace, x, weight, rows, C, V, stream);
  }
}

}  // namespace lm_head_ce_detail

// Bytes of logits workspace for chunks of chunk_tokens tokens.
inline size_t lm_head_ce_workspace_bytes(int chunk_tokens, int V) { return (size_t)chunk_tokens * V * sizeof(bf16); }

// Loss only (evaluation): losses (fp32) per token, no gradients.
inline void lm_head_ce_forward(float* losses /*(N)*/, bf16* workspace /*(chunk_tokens,V)*/, size_t workspace_bytes,
                               const bf16* inp /*(N,C)*/, const bf16* weight /*(V,C)*/, const int* targets /*(N)*/,
                               int N, int C, int V, int chunk_tokens, Matmul& matmul, cudaStream_t stream) {
  NvtxRange range("lm_head_ce_forward");
  KERNEL_REQUIRE(N > 0 && C > 0 && V > 0 && chunk_tokens > 0, "lm_head_ce_forward", "sizes must be positive");
  KERNEL_REQUIRE(losses && workspace && inp && weight && targets, "lm_head_ce_forward", "null pointer");
  KERNEL_REQUIRE(workspace_bytes >= lm_head_ce_workspace_bytes(chunk_tokens, V), "lm_head_ce_forward",
                 "workspace smaller than lm_head_ce_workspace_bytes(chunk_tokens, V)");
  for (int n0 = 0; n0 < N; n0 += chunk_tokens) {
    const int rows = std::min(chunk_tokens, N - n0);
    matmul.forward(workspace, inp + (int64_t)n0 * C, weight, rows, C, V, stream);
    lm_head_ce_detail::ce_launch(losses + n0, workspace, targets + n0, 0.0f, rows, V, false, stream);
  }
}

// Loss and gradients in one pass: losses (fp32), dinp = (or nullptr), dweight += (bf16, fp32 or nullptr).
inline void lm_head_ce_forward_backward(float* losses /*(N)*/, bf16* dinp /*(N,C) = or null*/,
                                        float* dweight /*(V,C) += or null*/, bf16* workspace /*(chunk_tokens,V)*/,
                                        size_t workspace_bytes, const bf16* inp /*(N,C)*/, const bf16* weight /*(V,C)*/,
                                        const int* targets /*(N)*/, float loss_scale, int N, int C, int V,
                                        int chunk_tokens, Matmul& matmul, cudaStream_t stream) {
  lm_head_ce_detail::forward_backward_impl(losses, dinp, dweight, workspace, workspace_bytes, inp, weight, targets,
                                           loss_scale, N, C, V, chunk_tokens, matmul, stream);
}
inline void lm_head_ce_forward_backward(float* losses /*(N)*/, bf16* dinp /*(N,C) = or null*/,
                                        bf16* dweight /*(V,C) += or null*/, bf16* workspace /*(chunk_tokens,V)*/,
                                        size_t workspace_bytes, const bf16* inp /*(N,C)*/, const bf16* weight /*(V,C)*/,
                                        const int* targets /*(N)*/, float loss_scale, int N, int C, int V,
                                        int chunk_tokens, Matmul& matmul, cudaStream_t stream) {
  lm_head_ce_detail::forward_backward_impl(losses, dinp, dweight, workspace, workspace_bytes, inp, weight, targets,
                                           loss_scale, N, C, V, chunk_tokens, matmul, stream);
}
inline void lm_head_ce_forward_backward(float* losses /*(N)*/, bf16* dinp /*(N,C) = or null*/,
                                        std::nullptr_t /*frozen head*/, bf16* workspace /*(chunk_tokens,V)*/,
                                        size_t workspace_bytes, const bf16* inp /*(N,C)*/, const bf16* weight /*(V,C)*/,
                                        const int* targets /*(N)*/, float loss_scale, int N, int C, int V,
                                        int chunk_tokens, Matmul& matmul, cudaStream_t stream) {
  lm_head_ce_detail::forward_backward_impl(losses, dinp, (float*)nullptr, workspace, workspace_bytes, inp, weight,
                                           targets, loss_scale, N, C, V, chunk_tokens, matmul, stream);
}

}  // namespace owlore
