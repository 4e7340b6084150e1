// RMSNorm (LLaMA), forward, fused residual-add + forward, and backward.
//   forward:  r = 1/sqrt(mean(x^2) + eps);  y = (x * r) * w;  rstd saves r (fp32) for the backward.
//   fused:    residual_out = bf16(a + b);  y = rmsnorm(residual_out)  (the rounded sum is normed, so
//             it equals residual_forward then rmsnorm_forward, with one pass over memory saved).
//   backward: dx = (r*g)*w - (r^3/C * sum_c g*w*x) * x;  dw += sum_n (g*x)*r
// Precision: bf16 tensors, fp32 math and reductions, rstd fp32.
// Variants that were chosen:
//  - forward: one warp per row with the row held in registers (P 16-byte packs per lane, P picked
//    from C), so x is read once: 1 read + 1 write of the tensor. Any C % 8 != 0 takes a scalar
//    two-pass warp-per-row path.
//  - backward: each thread owns 8 fixed columns for the whole kernel, a block walks R=4 rows at a
//    time (one block reduction for the R dot products), so dw is accumulated in registers without
//    atomics; per-block partials (scratch, fp32) are then summed in block order by a second kernel:
//    deterministic, and the grid size depends only on (N, C), so it is the same on every card.
//    Extra traffic: the partials (<= 1024 x C floats) are ~4-8% of the tensor bytes at 8192 tokens.
// Measured on H200 at 8192 tokens: see docs/bench/kernels-*.md (rmsnorm rows).
#pragma once
#include <algorithm>
#include <cstddef>

#include "kernels/common.cuh"

namespace owlore {
namespace rmsnorm_detail {

// One warp per row, row cached in registers: P packs of 8 bf16 per lane (C <= 256 * P).
template <int P, bool FUSED>
static __global__ void rmsnorm_forward_vec_kernel(bf16* __restrict__ out, float* __restrict__ rstd,
                                                  bf16* residual_out, const bf16* a, const bf16* __restrict__ b,
                                                  const bf16* __restrict__ weight, int N, int C, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const int64_t base = row * C;
  Pack128<bf16> x[P];
  float sum_sq = 0.0f;
#pragma unroll
  for (int k = 0; k < P; k++) {
    const int c = (lane + 32 * k) * 8;
    if (c < C) {
      x[k] = load128cs(a + base + c);
      if constexpr (FUSED) {
        const Pack128<bf16> y = load128cs(b + base + c);
#pragma unroll
        for (int j = 0; j < 8; j++) x[k][j] = __float2bfloat16_rn(__bfloat162float(x[k][j]) + __bfloat162float(y[j]));
        store128(residual_out + base + c, x[k]);
      }
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const float f = __bfloat162float(x[k][j]);
        sum_sq += f * f;
      }
    }
  }
  sum_sq = warp_reduce_sum(sum_sq);
  const float r = 1.0f / sqrtf(sum_sq / (float)C + eps);
  if (lane == 0) rstd[row] = r;
#pragma unroll
  for (int k = 0; k < P; k++) {
    const int c = (lane + 32 * k) * 8;
    if (c < C) {
      const Pack128<bf16> w = load128(weight + c);
      Pack128<bf16> y;
#pragma unroll
      for (int j = 0; j < 8; j++) y[j] = __float2bfloat16_rn(__bfloat162float(x[k][j]) * r * __bfloat162float(w[j]));
      store128cs(out + base + c, y);
    }
  }
}

// Any C: one warp per row, two passes (the second re-reads the row, from L1/L2).
template <bool FUSED>
static __global__ void rmsnorm_forward_scalar_kernel(bf16* __restrict__ out, float* __restrict__ rstd,
                                                     bf16* residual_out, const bf16* a, const bf16* b,
                                                     const bf16* __restrict__ weight, int N, int C, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const int64_t base = row * C;
  float sum_sq = 0.0f;
  for (int c = lane; c < C; c += 32) {
    bf16 v = a[base + c];
    if constexpr (FUSED) {
      v = __float2bfloat16_rn(__bfloat162float(v) + __bfloat162float(b[base + c]));
      residual_out[base + c] = v;
    }
    const float f = __bfloat162float(v);
    sum_sq += f * f;
  }
  sum_sq = warp_reduce_sum(sum_sq);
  const float r = 1.0f / sqrtf(sum_sq / (float)C + eps);
  if (lane == 0) rstd[row] = r;
  const bf16* x = FUSED ? residual_out : a;  // this lane wrote these elements itself
  for (int c = lane; c < C; c += 32)
    out[base + c] = __float2bfloat16_rn(__bfloat162float(x[base + c]) * r * __bfloat162float(weight[c]));
}

template <bool FUSED>
inline void forward_dispatch(bf16* out, float* rstd, bf16* residual_out, const bf16* a, const bf16* b,
                             const bf16* weight, int N, int C, float eps, cudaStream_t stream) {
  const int threads = 256, rows_per_block = threads / 32;
  const int grid = ceil_div(N, rows_per_block);
  bool vec = C % 8 == 0 && C <= 8192 && is_aligned16(out) && is_aligned16(a) && is_aligned16(weight);
  if (FUSED) vec = vec && is_aligned16(b) && is_aligned16(residual_out);
  if (!vec) {
    rmsnorm_forward_scalar_kernel<FUSED><<<grid, threads, 0, stream>>>(out, rstd, residual_out, a, b, weight, N, C, eps);
  } else {
    const int packs_per_lane = ceil_div(C / 8, 32);
#define OWLORE_RMS_FWD(P)                                                                                   \
  rmsnorm_forward_vec_kernel<P, FUSED><<<grid, threads, 0, stream>>>(out, rstd, residual_out, a, b, weight, N, \
                                                                     C, eps)
    if (packs_per_lane <= 1) OWLORE_RMS_FWD(1);
    else if (packs_per_lane <= 2) OWLORE_RMS_FWD(2);
    else if (packs_per_lane <= 4) OWLORE_RMS_FWD(4);
    else if (packs_per_lane <= 8) OWLORE_RMS_FWD(8);
    else if (packs_per_lane <= 16) OWLORE_RMS_FWD(16);
    else OWLORE_RMS_FWD(32);
#undef OWLORE_RMS_FWD
  }
  CUDA_CHECK_LAUNCH();
}

constexpr int kBackwardRows = 4;  // rows per block iteration (one block reduction for all of them)

// W contiguous columns per thread (8: vector path, 1: scalar path); blockDim.x >= C / W.
template <int W, int R>
static __global__ void rmsnorm_backward_kernel(bf16* dinp, float* __restrict__ partial /*(gridDim.x, C) or null*/,
                                               const bf16* dout, const bf16* __restrict__ inp,
                                               const bf16* __restrict__ weight, const float* __restrict__ rstd,
                                               int N, int C) {
  __shared__ float red[R][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int c0 = threadIdx.x * W;
  const bool active = c0 < C;
  float w[W], dw[W];
#pragma unroll
  for (int j = 0; j < W; j++) {
    w[j] = active ? __bfloat162float(weight[c0 + j]) : 0.0f;
    dw[j] = 0.0f;
  }
  for (int64_t row0 = (int64_t)blockIdx.x * R; row0 < N; row0 += (int64_t)gridDim.x * R) {
    float g[R][W], x[R][W], dot[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int64_t n = row0 + r;
      dot[r] = 0.0f;
      if (n < N && active) {
        if constexpr (W == 8) {
          const Pack128<bf16> gv = load128cs(dout + n * C + c0), xv = load128cs(inp + n * C + c0);
#pragma unroll
          for (int j = 0; j < 8; j++) {
            g[r][j] = __bfloat162float(gv[j]);
            x[r][j] = __bfloat162float(xv[j]);
          }
        } else {
          g[r][0] = __bfloat162float(dout[n * C + c0]);
          x[r][0] = __bfloat162float(inp[n * C + c0]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < W; j++) g[r][j] = x[r][j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < W; j++) dot[r] += g[r][j] * w[j] * x[r][j];
    }
    // block reduction of the R dot products; every thread gets the sums
    __syncthreads();  // red[] of the previous iteration has been read
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float s = warp_reduce_sum(dot[r]);
      if (lane == 0) red[r][warp] = s;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; r++) {
      float s = 0.0f;
      for (int i = 0; i < n_warps; i++) s += red[r][i];
      dot[r] = s;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int64_t n = row0 + r;
      if (n >= N || !active) continue;
      const float rs = rstd[n];
      const float coef = dot[r] / (float)C * rs * rs * rs;
      if constexpr (W == 8) {
        Pack128<bf16> dx;
#pragma unroll
        for (int j = 0; j < 8; j++) dx[j] = __float2bfloat16_rn(rs * g[r][j] * w[j] - coef * x[r][j]);
        store128cs(dinp + n * C + c0, dx);
      } else {
        dinp[n * C + c0] = __float2bfloat16_rn(rs * g[r][0] * w[0] - coef * x[r][0]);
      }
#pragma unroll
      for (int j = 0; j < W; j++) dw[j] += g[r][j] * x[r][j] * rs;
    }
  }
  if (partial && active) {
#pragma unroll
    for (int j = 0; j < W; j++) partial[(int64_t)blockIdx.x * C + c0 + j] = dw[j];
  }
}

// dweight[c] += sum over blocks b (in order) of partial[b, c].
template <typename TW>
static __global__ void rmsnorm_dweight_reduce_kernel(TW* __restrict__ dweight, const float* __restrict__ partial,
                                                     int n_blocks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int b = 0; b < n_blocks; b++) s += partial[(int64_t)b * C + c];
  if constexpr (sizeof(TW) == 2)
    dweight[c] = __float2bfloat16_rn(__bfloat162float(dweight[c]) + s);
  else
    dweight[c] = dweight[c] + s;
}

struct BackwardPlan {
  int width, threads, blocks;
};
inline BackwardPlan backward_plan(int N, int C) {
  BackwardPlan p;
  p.width = (C % 8 == 0) ? 8 : 1;
  p.threads = std::max(32, ((ceil_div(C, p.width) + 31) / 32) * 32);
  const int max_blocks = std::min(1024, std::max(1, 262144 / p.threads));
  p.blocks = std::max(1, std::min(ceil_div(N, kBackwardRows), max_blocks));
  return p;
}

template <typename TW>
inline void backward_impl(bf16* dinp, TW* dweight, float* scratch, const bf16* dout, const bf16* inp,
                          const bf16* weight, const float* rstd, int N, int C, cudaStream_t stream) {
  NvtxRange range("rmsnorm_backward");
  KERNEL_REQUIRE(N > 0 && C > 0, "rmsnorm_backward", "sizes must be positive");
  KERNEL_REQUIRE(dinp && dout && inp && weight && rstd, "rmsnorm_backward", "null pointer");
  KERNEL_REQUIRE(!dweight || scratch, "rmsnorm_backward", "scratch (rmsnorm_backward_scratch_floats) needed for dweight");
  BackwardPlan p = backward_plan(N, C);
  if (p.width == 8 && !(is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp))) {
    p.width = 1;
    p.threads = ((C + 31) / 32) * 32;
  }
  KERNEL_REQUIRE(p.threads <= 1024, "rmsnorm_backward", "C must be <= 8192 (C % 8 == 0, aligned) or <= 1024");
  float* partial = dweight ? scratch : nullptr;
  if (p.width == 8)
    rmsnorm_backward_kernel<8, kBackwardRows><<<p.blocks, p.threads, 0, stream>>>(dinp, partial, dout, inp, weight,
                                                                                  rstd, N, C);
  else
    rmsnorm_backward_kernel<1, kBackwardRows><<<p.blocks, p.threads, 0, stream>>>(dinp, partial, dout, inp, weight,
                                                                                  rstd, N, C);
  CUDA_CHECK_LAUNCH();
  if (dweight) {
    rmsnorm_dweight_reduce_kernel<TW><<<ceil_div(C, 256), 256, 0, stream>>>(dweight, partial, p.blocks, C);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace rmsnorm_detail

// out = rmsnorm(inp) * weight; rstd (fp32) saved for the backward.
inline void rmsnorm_forward(bf16* out /*(N,C)*/, float* rstd /*(N)*/, const bf16* inp /*(N,C)*/,
                            const bf16* weight /*(C)*/, int N, int C, float eps, cudaStream_t stream) {
  NvtxRange range("rmsnorm_forward");
  KERNEL_REQUIRE(N > 0 && C > 0, "rmsnorm_forward", "sizes must be positive");
  KERNEL_REQUIRE(out && rstd && inp && weight, "rmsnorm_forward", "null pointer");
  rmsnorm_detail::forward_dispatch<false>(out, rstd, nullptr, inp, nullptr, weight, N, C, eps, stream);
}

// residual_out = a + b (bf16), out = rmsnorm(residual_out) * weight. residual_out may alias a or b.
inline void rmsnorm_residual_forward(bf16* residual_out /*(N,C)*/, bf16* out /*(N,C)*/, float* rstd /*(N)*/,
                                     const bf16* a /*(N,C)*/, const bf16* b /*(N,C)*/, const bf16* weight /*(C)*/,
                                     int N, int C, float eps, cudaStream_t stream) {
  NvtxRange range("rmsnorm_residual_forward");
  KERNEL_REQUIRE(N > 0 && C > 0, "rmsnorm_residual_forward", "sizes must be positive");
  KERNEL_REQUIRE(residual_out && out && rstd && a && b && weight, "rmsnorm_residual_forward", "null pointer");
  rmsnorm_detail::forward_dispatch<true>(out, rstd, residual_out, a, b, weight, N, C, eps, stream);
}

// Floats of scratch rmsnorm_backward needs when dweight is not null.
inline size_t rmsnorm_backward_scratch_floats(int N, int C) {
  return (size_t)rmsnorm_detail::backward_plan(N, C).blocks * C;
}

// dinp = (overwritten; may alias dout); dweight += (bf16 or fp32, or nullptr when frozen).
inline void rmsnorm_backward(bf16* dinp /*(N,C) =*/, bf16* dweight /*(C) +=*/, float* scratch /*(scratch_floats)*/,
                             const bf16* dout /*(N,C)*/, const bf16* inp /*(N,C)*/, const bf16* weight /*(C)*/,
                             const float* rstd /*(N)*/, int N, int C, cudaStream_t stream) {
  rmsnorm_detail::backward_impl(dinp, dweight, scratch, dout, inp, weight, rstd, N, C, stream);
}
inline void rmsnorm_backward(bf16* dinp /*(N,C) =*/, float* dweight /*(C) +=*/, float* scratch /*(scratch_floats)*/,
                             const bf16* dout /*(N,C)*/, const bf16* inp /*(N,C)*/, const bf16* weight /*(C)*/,
                             const float* rstd /*(N)*/, int N, int C, cudaStream_t stream) {
  rmsnorm_detail::backward_impl(dinp, dweight, scratch, dout, inp, weight, rstd, N, C, stream);
}
inline void rmsnorm_backward(bf16* dinp /*(N,C) =*/, std::nullptr_t /*frozen weight*/, float* scratch /*unused*/,
                             const bf16* dout /*(N,C)*/, const bf16* inp /*(N,C)*/, const bf16* weight /*(C)*/,
                             const float* rstd /*(N)*/, int N, int C, cudaStream_t stream) {
  rmsnorm_detail::backward_impl(dinp, (float*)nullptr, scratch, dout, inp, weight, rstd, N, C, stream);
}

}  // namespace owlore
