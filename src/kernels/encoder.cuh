// Token embedding (encoder), forward and backward.
//   forward:  out[n,:] = wte[tokens[n],:]
//   backward: dwte[v,:] += sum over n with tokens[n] = v of dout[n,:], summed in fp32 in token
//             order, then added once into dwte (bf16 or fp32). Deterministic: no float atomics.
// How the backward stays deterministic: the positions 0..N-1 are radix-sorted by token id
// (cub::DeviceRadixSort::SortPairs, a stable sort, so equal ids keep position order); then one
// thread group per run of equal ids walks its run in order, accumulating 8 columns per thread in
// fp32 registers, and writes the row of dwte once. Frequent tokens make longer runs (serial in
// the run, parallel over C); the sort costs a few small launches, which dominate at LLaMA sizes
// (8192 tokens: ~8192 x C x 2 bytes of dout is only 9-67 MB).
// Sparse form (encoder_backward_rows, for an untied embedding): the gradient lives only in the
// rows of the tokens that occur, (capacity, C) instead of (V, C) — 8,192 x 4,096 floats instead of
// 32,000 x 4,096 for LLaMA-2-7B at 16 x 512 tokens. row_of_token[v] is 1 + the row holding token
// v's gradient, 0 when v has none (so a zeroed map is empty), -1 when v needed a row past the
// capacity (its gradient was dropped; marked so that a later call counts it once, not again);
// row_of_token[V] counts the rows the step's tokens need, so > capacity says some were dropped. A call's new tokens take the next rows in token order (a scan over the sorted run heads in
// one block): deterministic, and a second micro-batch adds into the rows the first one made.
// Precision: bf16 in/out, fp32 accumulation. Vector path (16-byte loads) needs C % 8 == 0 and
// 16-byte aligned pointers; any C works through the scalar path.
// Measured (H200, 8192 tokens, docs/bench/kernels.md): forward 38 us at C=4096
// (82% of copy bandwidth, same as F.embedding); backward with fp32 dwte 116 us (62%; 5.5x faster
// than PyTorch's autograd), 47 us at SmolLM2 where the sort's fixed ~15-20 us dominates. Scalar
// fp32 read-modify-writes of dwte ran at 35%; 16-byte ones were chosen.
#pragma once
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>

#include "kernels/common.cuh"

namespace owlore {
namespace encoder_detail {

template <bool VEC>
static __global__ void encoder_forward_kernel(bf16* __restrict__ out, const int* __restrict__ tokens,
                                       const bf16* __restrict__ wte, int N, int C) {
  if constexpr (VEC) {
    const int packs = C / 8;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)N * packs) return;
    const int n = (int)(i / packs), p = (int)(i % packs);
    const int t = tokens[n];
    store128cs(out + (int64_t)n * C + p * 8, load128(wte + (int64_t)t * C + p * 8));
  } else {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)N * C) return;
    const int n = (int)(i / C), c = (int)(i % C);
    out[i] = wte[(int64_t)tokens[n] * C + c];
  }
}

static __global__ void iota_kernel(int* __restrict__ out, int N) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < N) out[i] = i;
}

// Sparse form: gives every token of the sorted ids that has no row yet the next free row, in
// token order; past `capacity` rows a token gets none (marked -1, its gradient is dropped) while
// the count goes on, so the caller sees the overflow in row_of_token[V] > capacity. A marked
// token is not new in a later call: the count stays the number of distinct tokens. One block: each thread
// counts the new run heads of its contiguous share, a block scan turns the counts into offsets,
// and the threads assign their heads in order.
static __global__ void assign_rows_kernel(int* __restrict__ row_of_token /*(V+1): 1 + row, [V] = rows in use*/,
                                          const int* __restrict__ sorted_tokens, int N, int V, int capacity) {
  __shared__ int offsets[1024];
  const int per = (N + blockDim.x - 1) / blockDim.x;
  const int begin = min(N, (int)threadIdx.x * per), end = min(N, begin + per);
  auto is_new_head = [&](int i) {
    const int t = sorted_tokens[i];
    return (i == 0 || sorted_tokens[i - 1] != t) && row_of_token[t] == 0;
  };
  int count = 0;
  for (int i = begin; i < end; i++) count += is_new_head(i);
  offsets[threadIdx.x] = count;
  __syncthreads();
  for (int stride = 1; stride < (int)blockDim.x; stride *= 2) {  // inclusive scan (Hillis-Steele)
    const int add = threadIdx.x >= (unsigned)stride ? offsets[threadIdx.x - stride] : 0;
    __syncthreads();
    offsets[threadIdx.x] += add;
    __syncthreads();
  }
  const int rows_before = row_of_token[V];
  int next = rows_before + offsets[threadIdx.x] - count;
  // Each token has one head, so no two threads write the same entry, and a thread reads only
  // entries of its own heads' tokens after the scan.
  for (int i = begin; i < end; i++)
    if (is_new_head(i)) {
      row_of_token[sorted_tokens[i]] = next < capacity ? 1 + next : -1;
      next++;
    }
  __syncthreads();  // every thread has read row_of_token[V]
  if (threadIdx.x == blockDim.x - 1) row_of_token[V] = rows_before + offsets[threadIdx.x];
}

// grid.x: sorted position i (only run heads work), grid.y: column block of blockDim.x*8 columns.
// row_of_token null: token v's row of dwte is v; else 1 + row_of_token[v] (the sparse form).
template <typename TW, bool VEC>
static __global__ void encoder_backward_kernel(TW* __restrict__ dwte, const bf16* __restrict__ dout,
                                        const int* __restrict__ sorted_tokens, const int* __restrict__ sorted_pos,
                                        const int* __restrict__ row_of_token, int N, int C) {
  const int i = blockIdx.x;
  const int token = sorted_tokens[i];
  if (i > 0 && sorted_tokens[i - 1] == token) return;  // not the head of a run
  const int64_t row = row_of_token ? row_of_token[token] - 1 : token;
  if (row < 0) return;  // no row (-1 - 1): the sparse form ran out of rows (see assign_rows_kernel)
  const int c0 = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
  if (c0 >= C) return;
  float acc[8];
#pragma unroll
  for (int k = 0; k < 8; k++) acc[k] = 0.0f;
  for (int j = i; j < N && sorted_tokens[j] == token; j++) {
    const bf16* row = dout + (int64_t)sorted_pos[j] * C + c0;
    if (VEC) {
      const Pack128<bf16> g = load128cs(row);
#pragma unroll
      for (int k = 0; k < 8; k++) acc[k] += __bfloat162float(g[k]);
    } else {
#pragma unroll
      for (int k = 0; k < 8; k++)
        if (c0 + k < C) acc[k] += __bfloat162float(row[k]);
    }
  }
  TW* dst = dwte + row * C + c0;
  if constexpr (VEC && sizeof(TW) == 2) {
    Pack128<bf16> w = load128(dst);
#pragma unroll
    for (int k = 0; k < 8; k++) w[k] = __float2bfloat16_rn(__bfloat162float(w[k]) + acc[k]);
    store128(dst, w);
  } else if constexpr (VEC) {  // fp32: two 16-byte read-modify-writes
    Pack128<float> w0 = load128(dst), w1 = load128(dst + 4);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      w0[k] = w0[k] + acc[k];
      w1[k] = w1[k] + acc[k + 4];
    }
    store128(dst, w0);
    store128(dst + 4, w1);
  } else {
#pragma unroll
    for (int k = 0; k < 8; k++) {
      if (VEC || c0 + k < C) {
        if constexpr (sizeof(TW) == 2)
          dst[k] = __float2bfloat16_rn(__bfloat162float(dst[k]) + acc[k]);
        else
          dst[k] = dst[k] + acc[k];
      }
    }
  }
}

inline int bits_for(int V) {
  int bits = 1;
  while (bits < 31 && (1 << bits) < V) bits++;
  return bits;
}

template <typename TW>
inline void encoder_backward_impl(TW* dwte, int* row_of_token, int capacity, void* workspace, size_t workspace_bytes,
                                  const bf16* dout, const int* tokens, int N, int C, int V, cudaStream_t stream) {
  NvtxRange range("encoder_backward");
  KERNEL_REQUIRE(N > 0 && C > 0 && V > 0, "encoder_backward", "sizes must be positive");
  KERNEL_REQUIRE(dwte && dout && tokens && workspace, "encoder_backward", "null pointer");
  // workspace: sorted ids (N), positions in (N), positions out (N), then cub's temporary storage.
  auto align = [](size_t x) { return (x + 255) & ~(size_t)255; };
  char* ws = static_cast<char*>(workspace);
  int* sorted_tokens = reinterpret_cast<int*>(ws);
  int* pos_in = reinterpret_cast<int*>(ws + align(sizeof(int) * N));
  int* pos_out = reinterpret_cast<int*>(ws + 2 * align(sizeof(int) * N));
  void* temp = ws + 3 * align(sizeof(int) * N);
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, tokens, sorted_tokens, pos_in, pos_out, N, 0,
                                             bits_for(V), stream));
  KERNEL_REQUIRE(3 * align(sizeof(int) * N) + temp_bytes <= workspace_bytes, "encoder_backward",
                 "workspace too small: use encoder_backward_workspace_bytes(N, V)");
  iota_kernel<<<ceil_div(N, 256), 256, 0, stream>>>(pos_in, N);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens, sorted_tokens, pos_in, pos_out, N, 0,
                                             bits_for(V), stream));
  if (row_of_token) {
    assign_rows_kernel<<<1, 1024, 0, stream>>>(row_of_token, sorted_tokens, N, V, capacity);
    CUDA_CHECK_LAUNCH();
  }
  const bool vec = C % 8 == 0 && is_aligned16(dwte) && is_aligned16(dout);
  const int threads = std::min(128, ((ceil_div(C, 8) + 31) / 32) * 32);
  const dim3 grid(N, ceil_div(C, threads * 8));
  if (vec)
    encoder_backward_kernel<TW, true><<<grid, threads, 0, stream>>>(dwte, dout, sorted_tokens, pos_out, row_of_token, N, C);
  else
    encoder_backward_kernel<TW, false><<<grid, threads, 0, stream>>>(dwte, dout, sorted_tokens, pos_out, row_of_token, N, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace encoder_detail

// out = wte[tokens]. Tokens must lie in [0, V) (not checked on the device).
inline void encoder_forward(bf16* out /*(N,C)*/, const int* tokens /*(N)*/, const bf16* wte /*(V,C)*/, int N, int C,
                            int V, cudaStream_t stream) {
  NvtxRange range("encoder_forward");
  KERNEL_REQUIRE(N > 0 && C > 0 && V > 0, "encoder_forward", "sizes must be positive");
  KERNEL_REQUIRE(out && tokens && wte, "encoder_forward", "null pointer");
  const bool vec = C % 8 == 0 && is_aligned16(out) && is_aligned16(wte);
  const int64_t work = vec ? (int64_t)N * (C / 8) : (int64_t)N * C;
  const int threads = 256;
  if (vec)
    encoder_detail::encoder_forward_kernel<true><<<ceil_div(work, threads), threads, 0, stream>>>(out, tokens, wte, N, C);
  else
    encoder_detail::encoder_forward_kernel<false><<<ceil_div(work, threads), threads, 0, stream>>>(out, tokens, wte, N, C);
  CUDA_CHECK_LAUNCH();
}

// Bytes of device workspace encoder_backward needs for N tokens over a vocabulary of V.
inline size_t encoder_backward_workspace_bytes(int N, int V) {
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const int*)nullptr, (int*)nullptr,
                                             (const int*)nullptr, (int*)nullptr, N, 0,
                                             encoder_detail::bits_for(V)));
  return 3 * (((size_t)sizeof(int) * N + 255) & ~(size_t)255) + temp_bytes;
}

// dwte += scatter of dout by token (bf16 or fp32 dwte). Deterministic (see the file comment).
inline void encoder_backward(bf16* dwte /*(V,C) +=*/, void* workspace /*encoder_backward_workspace_bytes*/,
                             size_t workspace_bytes, const bf16* dout /*(N,C)*/, const int* tokens /*(N)*/, int N,
                             int C, int V, cudaStream_t stream) {
  encoder_detail::encoder_backward_impl(dwte, (int*)nullptr, 0, workspace, workspace_bytes, dout, tokens, N, C, V, stream);
}
inline void encoder_backward(float* dwte /*(V,C) +=*/, void* workspace /*encoder_backward_workspace_bytes*/,
                             size_t workspace_bytes, const bf16* dout /*(N,C)*/, const int* tokens /*(N)*/, int N,
                             int C, int V, cudaStream_t stream) {
  encoder_detail::encoder_backward_impl(dwte, (int*)nullptr, 0, workspace, workspace_bytes, dout, tokens, N, C, V, stream);
}
// The sparse form (see the file comment): rows += the gradients of the tokens' rows, new tokens
// take rows first (a zeroed row_of_token and rows start a step). The caller plans room for every
// token of a step (at most N new rows per call); row_of_token[V] > capacity afterwards says it
// did not, and the tokens marked -1 are those whose gradients were dropped.
inline void encoder_backward_rows(float* rows /*(capacity,C) +=*/, int* row_of_token /*(V+1)*/, int capacity,
                                  void* workspace /*encoder_backward_workspace_bytes*/, size_t workspace_bytes,
                                  const bf16* dout /*(N,C)*/, const int* tokens /*(N)*/, int N, int C, int V,
                                  cudaStream_t stream) {
  KERNEL_REQUIRE(row_of_token && capacity > 0, "encoder_backward_rows", "null row map or no rows");
  encoder_detail::encoder_backward_impl(rows, row_of_token, capacity, workspace, workspace_bytes, dout, tokens, N, C, V,
                                        stream);
}

}  // namespace owlore
