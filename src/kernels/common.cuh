// What every kernel file shares, and the only header a kernel file includes besides CUDA's:
// error checks, the NVTX range, 16-byte vector loads, warp/block reductions, stochastic rounding.
// Copy this file with any kernel header to lift the kernel into another runtime.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

// ---- error checks: throw with the call and the location (the host code reports them) -------
inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorString(err) + " in " + call + " at " + file +
                             ":" + std::to_string(line));
}
#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
// After every launch: catches bad launch configurations at the launcher that made them.
#define CUDA_CHECK_LAUNCH() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
// Preconditions of a launcher (sizes, alignment) with a message naming the op.
#define KERNEL_REQUIRE(cond, op, what)                                                          \
  do {                                                                                          \
    if (!(cond)) throw std::runtime_error(std::string(op) + ": " + (what) + " (" #cond ")"); \
  } while (0)

// ---- NVTX: one range per launcher, named after the op ---------------------------------------
struct NvtxRange {
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

typedef __nv_bfloat16 bf16;

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

// ---- 16-byte vectors: 8 bf16 or 4 float per load/store ----------------------------------------
template <typename T>
struct alignas(16) Pack128 {
  static constexpr int size = 16 / sizeof(T);
  T v[size];
  __device__ T& operator[](int i) { return v[i]; }
  __device__ const T& operator[](int i) const { return v[i]; }
};
template <typename T>
__device__ __forceinline__ Pack128<T> load128(const T* p) { return *reinterpret_cast<const Pack128<T>*>(p); }
// Streaming load: data read once should not evict what is reused from L2.
template <typename T>
__device__ __forceinline__ Pack128<T> load128cs(const T* p) {
  Pack128<T> out;
  *reinterpret_cast<int4*>(&out) = __ldcs(reinterpret_cast<const int4*>(p));
  return out;
}
template <typename T>
__device__ __forceinline__ void store128(T* p, const Pack128<T>& v) { *reinterpret_cast<Pack128<T>*>(p) = v; }
template <typename T>
__device__ __forceinline__ void store128cs(T* p, const Pack128<T>& v) {
  __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&v));
}
inline bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ---- reductions ------------------------------------------------------------------------------
__device__ __forceinline__ float warp_reduce_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float warp_reduce_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
// Sum over the block; every thread gets the result. Needs blockDim.x a multiple of 32, <= 1024.
__device__ __forceinline__ float block_reduce_sum(float x) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  x = warp_reduce_sum(x);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  x = lane < n_warps ? partial[lane] : 0.0f;
  return warp_reduce_sum(x);
}

// ---- stochastic rounding fp32 -> bf16 ------------------------------------------------------------
// A counter-based hash (no state): the same (seed, index) rounds the same way on every run, so
// updates are reproducible and a resumed run is bit-exact.
__device__ __forceinline__ uint32_t hash_u32(uint32_t x, uint32_t seed) {
  x ^= seed * 0x9E3779B9u;
  x ^= x >> 16; x *= 0x7FEB352Du;
  x ^= x >> 15; x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
// Adds uniform noise below the bf16 ulp, then truncates: E[round(x)] = x.
__device__ __forceinline__ bf16 stochastic_round_bf16(float x, uint32_t random_bits) {
  uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7F800000u) == 0x7F800000u) return __float2bfloat16_rn(x);  // inf/nan unchanged
  bits += random_bits & 0xFFFFu;
  bits &= 0xFFFF0000u;
  return __ushort_as_bfloat16((unsigned short)(bits >> 16));
}
