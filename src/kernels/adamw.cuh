// AdamW on bf16 weights (PyTorch's torch.optim.AdamW formula), and the global gradient norm.
//   g = grad * grad_scale (the clip factor);  p -= lr*wd*p;
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
// Precision and rounding:
//  - math in fp32; moments fp32 (TM = float) or bf16 (TM = bf16, the memory-saving flag: stored
//    with stochastic rounding so small updates of v are not lost);
//  - without a master copy the new weight is stochastically rounded into bf16: unbiased,
//    E[bf16(p)] = p, with random bits hash(seed, step, index) (no RNG state): the same
//    (seed, step) reproduces the same bits on every run and after a resume;
//  - with fp32 master weights (master != nullptr) the master is updated and the bf16 weight is
//    its round-to-nearest copy.
//  - grad may be bf16 or fp32; grad_scale is a host float times, when grad_scale_device is not
//    null, a device scalar (so the clip factor computed on the device needs no host sync).
//  - adamw_update_rows takes a sparse gradient (encoder_backward_rows: rows of the tokens that
//    occurred, and the map from a parameter row to its gradient row); every parameter row steps,
//    those without a gradient row with g = 0, exactly as the dense update with zero rows.
// Gradient norm: sum_squares writes sum(x^2) (fp32) with a fixed grid of per-block partials and a
// second single-block pass over them in order: deterministic, no atomics. accumulate=true adds to
// *out, so the global norm over many tensors is a sequence of calls on one stream.
// Variant: one thread per 8 elements (16-byte bf16 loads, 2 x 16-byte fp32 loads); pure streaming.
// Measured on H200 (one 7B layer, 202M params): fp32 moments 1.13 ms at 22 B/param (93% of copy
// bandwidth), with fp32 master 96%, bf16 moments 80% (hashing-bound, see sr_key);
// sum_squares 100%. docs/bench/kernels.md.
#pragma once
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace owlore {
namespace adamw_detail {

// Random bits for stochastic rounding: stochastic_round_bf16 uses 16 bits, so one 32-bit hash
// serves two draws. Weight of element i: half (i & 1) of hash(i & ~1, key_p); the moments of element
// i: m takes the low half, v the high half of hash(i, key_mv). Keys hash (seed, step, stream, high
// bits of i) once per thread (a pack of 8 never straddles a change of the high bits). The first
// version used one hash per draw (3 per element): the bf16-moment update was compute-bound (52-61%
// of copy bandwidth).
static __device__ __forceinline__ uint32_t sr_key(uint32_t seed, int step, int64_t i, uint32_t stream_id) {
  return hash_u32((uint32_t)step ^ (stream_id * 0x68E31DA4u) ^ ((uint32_t)((uint64_t)i >> 32) * 0x85EBCA6Bu), seed);
}
static __device__ __forceinline__ uint32_t sr_bits(uint32_t key, int64_t i) { return hash_u32((uint32_t)i, key); }
// 16 random bits for the weight of element i (shared hash with its even/odd neighbour)
static __device__ __forceinline__ uint32_t sr_bits_weight(uint32_t key, int64_t i) {
  const uint32_t r = sr_bits(key, i & ~(int64_t)1);
  return (i & 1) ? (r >> 16) : (r & 0xFFFFu);
}

template <typename T>
static __device__ __forceinline__ void load8(float (&out)[8], const T* p) {
  if constexpr (sizeof(T) == 2) {
    const Pack128<bf16> v = load128cs(p);
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = __bfloat162float(v[j]);
  } else {
    const Pack128<float> a = load128cs(p), b = load128cs(p + 4);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      out[j] = a[j];
      out[j + 4] = b[j];
    }
  }
}
template <typename T>
static __device__ __forceinline__ float load1(const T* p) {
  if constexpr (sizeof(T) == 2) return __bfloat162float(*p);
  else return *p;
}

struct Hyper {
  float lr, beta1, beta2, eps, weight_decay, bias1, bias2, grad_scale;
  int step;
  uint32_t seed;
};

static __device__ __forceinline__ void adam_math(float& p, float& m, float& v, float grad, const Hyper& h, float scale) {
  const float g = grad * scale;
  m = h.beta1 * m + (1.0f - h.beta1) * g;
  v = h.beta2 * v + (1.0f - h.beta2) * g * g;
  const float m_hat = m / h.bias1;
  const float v_hat = v / h.bias2;
  p -= h.lr * h.weight_decay * p;
  p -= h.lr * m_hat / (sqrtf(v_hat) + h.eps);
}

template <typename TM>
static __device__ __forceinline__ TM store_moment(float x, uint32_t bits16) {
  if constexpr (sizeof(TM) == 2) return stochastic_round_bf16(x, bits16);
  else return x;
}

// grad_row_of (sparse gradients): parameter row i / row_len has its gradient in grad's row
// grad_row_of[i / row_len] - 1, or none (0, or -1: a row the sparse form could not give); null:
// grad is dense like param.
template <typename TG>
static __device__ __forceinline__ const TG* grad_element(const TG* grad, const int* grad_row_of, int row_len,
                                                         int64_t i) {
  if (!grad_row_of) return grad + i;
  const int row = grad_row_of[i / row_len];
  return row > 0 ? grad + (int64_t)(row - 1) * row_len + i % row_len : nullptr;
}

template <typename TG, typename TM, bool VEC>
static __global__ void adamw_kernel(bf16* __restrict__ param, TM* __restrict__ m, TM* __restrict__ v,
                                    float* __restrict__ master, const TG* __restrict__ grad, int64_t n, Hyper h,
                                    const float* __restrict__ grad_scale_device, const int* __restrict__ grad_row_of,
                                    int row_len) {
  const float scale = grad_scale_device ? h.grad_scale * *grad_scale_device : h.grad_scale;
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if constexpr (VEC) {
    const int64_t i0 = t * 8;
    if (i0 >= n) return;
    const uint32_t key_p = sr_key(h.seed, h.step, i0, 0);
    float p[8], mm[8], vv[8], g[8];
    const TG* g_at = grad_element(grad, grad_row_of, row_len, i0);  // a pack never straddles rows
    if (g_at) load8(g, g_at);
    else
#pragma unroll
      for (int j = 0; j < 8; j++) g[j] = 0.0f;
    load8(mm, m + i0);
    load8(vv, v + i0);
    if (master) load8(p, master + i0);
    else load8(p, param + i0);
#pragma unroll
    for (int j = 0; j < 8; j++) adam_math(p[j], mm[j], vv[j], g[j], h, scale);
    Pack128<bf16> pb;
    if (master) {
#pragma unroll
      for (int j = 0; j < 8; j++) pb[j] = __float2bfloat16_rn(p[j]);
    } else {
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        const uint32_t r = sr_bits(key_p, i0 + j);  // i0 + j even: bits for j and j+1
        pb[j] = stochastic_round_bf16(p[j], r & 0xFFFFu);
        pb[j + 1] = stochastic_round_bf16(p[j + 1], r >> 16);
      }
    }
    store128(param + i0, pb);
    if (master) {
      store128(master + i0, Pack128<float>{{p[0], p[1], p[2], p[3]}});
      store128(master + i0 + 4, Pack128<float>{{p[4], p[5], p[6], p[7]}});
    }
    if constexpr (sizeof(TM) == 2) {
      const uint32_t key_mv = sr_key(h.seed, h.step, i0, 1);
      Pack128<bf16> a, b;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const uint32_t r = sr_bits(key_mv, i0 + j);
        a[j] = store_moment<TM>(mm[j], r & 0xFFFFu);
        b[j] = store_moment<TM>(vv[j], r >> 16);
      }
      store128(m + i0, a);
      store128(v + i0, b);
    } else {
      store128(m + i0, Pack128<float>{{mm[0], mm[1], mm[2], mm[3]}});
      store128(m + i0 + 4, Pack128<float>{{mm[4], mm[5], mm[6], mm[7]}});
      store128(v + i0, Pack128<float>{{vv[0], vv[1], vv[2], vv[3]}});
      store128(v + i0 + 4, Pack128<float>{{vv[4], vv[5], vv[6], vv[7]}});
    }
  } else {
    const int64_t i = t;
    if (i >= n) return;
    float p = master ? master[i] : __bfloat162float(param[i]);
    float mm = load1(m + i), vv = load1(v + i);
    const TG* g_at = grad_element(grad, grad_row_of, row_len, i);
    adam_math(p, mm, vv, g_at ? load1(g_at) : 0.0f, h, scale);
    param[i] = master ? __float2bfloat16_rn(p) : stochastic_round_bf16(p, sr_bits_weight(sr_key(h.seed, h.step, i, 0), i));
    if (master) master[i] = p;
    uint32_t r = 0;
    if constexpr (sizeof(TM) == 2) r = sr_bits(sr_key(h.seed, h.step, i, 1), i);
    m[i] = store_moment<TM>(mm, r & 0xFFFFu);
    v[i] = store_moment<TM>(vv, r >> 16);
  }
}

constexpr int kSumSquaresMaxBlocks = 1024;
constexpr int kSumSquaresThreads = 256;

inline int sum_squares_blocks(int64_t n) {
  return (int)std::max<int64_t>(1, std::min<int64_t>(kSumSquaresMaxBlocks, (n + 4095) / 4096));
}

template <typename T>
static __global__ void sum_squares_partial_kernel(float* __restrict__ partial, const T* __restrict__ x, int64_t n,
                                                  bool vec) {
  const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  float acc = 0.0f;
  int64_t n_vec = 0;
  if (vec) {
    n_vec = n / 8 * 8;
    for (int64_t i = tid * 8; i < n_vec; i += stride * 8) {
      float f[8];
      load8(f, x + i);
#pragma unroll
      for (int j = 0; j < 8; j++) acc += f[j] * f[j];
    }
  }
  for (int64_t i = n_vec + tid; i < n; i += stride) {
    const float f = load1(x + i);
    acc += f * f;
  }
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

static __global__ void sum_squares_final_kernel(float* __restrict__ out, const float* __restrict__ partial,
                                                int n_partial, bool accumulate) {
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) acc += partial[i];
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) *out = accumulate ? *out + acc : acc;
}

inline Hyper hyper(float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale,
                   uint32_t seed) {
  Hyper h;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.eps = eps;
  h.weight_decay = weight_decay;
  h.bias1 = 1.0f - std::pow(beta1, (float)step);
  h.bias2 = 1.0f - std::pow(beta2, (float)step);
  h.grad_scale = grad_scale;
  h.step = step;
  h.seed = seed;
  return h;
}

template <typename TG, typename TM>
inline void launch(bf16* param, TM* m, TM* v, float* master, const TG* grad, int64_t n, const Hyper& h,
                   const float* grad_scale_device, const int* grad_row_of, int row_len, cudaStream_t stream) {
  const bool vec = n % 8 == 0 && is_aligned16(param) && is_aligned16(m) && is_aligned16(v) && is_aligned16(grad) &&
                   (!master || is_aligned16(master)) && (!grad_row_of || row_len % 8 == 0);
  const int threads = 256;
  if (vec)
    adamw_kernel<TG, TM, true><<<ceil_div(n / 8, threads), threads, 0, stream>>>(param, m, v, master, grad, n, h,
                                                                               grad_scale_device, grad_row_of, row_len);
  else
    adamw_kernel<TG, TM, false><<<ceil_div(n, threads), threads, 0, stream>>>(param, m, v, master, grad, n, h,
                                                                            grad_scale_device, grad_row_of, row_len);
  CUDA_CHECK_LAUNCH();
}

}  // namespace adamw_detail

// One AdamW step on n parameters. TG (grad) and TM (moments) are bf16 or float.
// master: fp32 master weights (n) or nullptr (then stochastic rounding into param).
template <typename TG, typename TM>
inline void adamw_update(bf16* param /*(n)*/, TM* m /*(n)*/, TM* v /*(n)*/, float* master /*(n) or null*/,
                         const TG* grad /*(n)*/, int64_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, int step, float grad_scale, const float* grad_scale_device /*(1) or null*/,
                         uint32_t seed, cudaStream_t stream) {
  NvtxRange range("adamw_update");
  KERNEL_REQUIRE(n > 0, "adamw_update", "n must be positive");
  KERNEL_REQUIRE(step >= 1, "adamw_update", "step counts from 1");
  KERNEL_REQUIRE(param && m && v && grad, "adamw_update", "null pointer");
  adamw_detail::launch(param, m, v, master, grad, n,
                       adamw_detail::hyper(lr, beta1, beta2, eps, weight_decay, step, grad_scale, seed),
                       grad_scale_device, nullptr, 0, stream);
}

// The same step with a sparse gradient (see the file comment): param, m, v are (n / row_len,
// row_len); grad_rows holds the gradient rows that exist, grad_row_of (n / row_len) maps each
// parameter row to 1 + its gradient row, or 0 for none (g = 0).
template <typename TM>
inline void adamw_update_rows(bf16* param /*(n)*/, TM* m /*(n)*/, TM* v /*(n)*/, float* master /*(n) or null*/,
                              const float* grad_rows /*(rows, row_len)*/, const int* grad_row_of /*(n / row_len)*/,
                              int row_len, int64_t n, float lr, float beta1, float beta2, float eps,
                              float weight_decay, int step, float grad_scale, const float* grad_scale_device /*(1) or null*/,
                              uint32_t seed, cudaStream_t stream) {
  NvtxRange range("adamw_update_rows");
  KERNEL_REQUIRE(n > 0 && row_len > 0 && n % row_len == 0, "adamw_update_rows", "n must be a positive multiple of row_len");
  KERNEL_REQUIRE(step >= 1, "adamw_update_rows", "step counts from 1");
  KERNEL_REQUIRE(param && m && v && grad_rows && grad_row_of, "adamw_update_rows", "null pointer");
  adamw_detail::launch(param, m, v, master, grad_rows, n, adamw_detail::hyper(lr, beta1, beta2, eps, weight_decay, step,
                       grad_scale, seed), grad_scale_device, grad_row_of, row_len, stream);
}

// Floats of scratch sum_squares needs.
inline int sum_squares_scratch_floats() { return adamw_detail::kSumSquaresMaxBlocks; }

// *out = sum(x^2) (or += when accumulate), fp32, deterministic (fixed-order two passes).
template <typename T>
inline void sum_squares(float* out /*(1)*/, float* scratch /*(sum_squares_scratch_floats)*/, const T* x /*(n)*/,
                        int64_t n, bool accumulate, cudaStream_t stream) {
  NvtxRange range("sum_squares");
  KERNEL_REQUIRE(n > 0, "sum_squares", "n must be positive");
  KERNEL_REQUIRE(out && scratch && x, "sum_squares", "null pointer");
  const int blocks = adamw_detail::sum_squares_blocks(n);
  adamw_detail::sum_squares_partial_kernel<T><<<blocks, adamw_detail::kSumSquaresThreads, 0, stream>>>(
      scratch, x, n, is_aligned16(x));
  CUDA_CHECK_LAUNCH();
  adamw_detail::sum_squares_final_kernel<<<1, 1024, 0, stream>>>(out, scratch, blocks, accumulate);
  CUDA_CHECK_LAUNCH();
}


}  // namespace owlore
