// GaLore-Adam kernels (DESIGN.md §1 "GaLore-Adam"; Zhao et al. 2024, Alg. 2), the pieces the GPU
// optimizer (optim/galore_gpu) strings together; the CPU twin is optim/galore_cpu.
//   projection      right (m ≥ n): R (m×r) = G·Qᵀ, Q (r×n)   left (m < n): R (r×n) = Pᵀ·G, P (m×r)
//   Adam on R       m ← β1 m + (1−β1)·s·R;  v ← β2 v + (1−β2)·(s·R)²;  N = m / (sqrt(v) + ε)
//                   (s = grad_scale: the clip factor and any averaging, applied to R first)
//   back-projection U = α·N·Q (right) or α·P·N (left)
//   weight update   W ← W − lr·wd·W − step·U,  step = lr·sqrt(1−β2ᵗ)/(1−β1ᵗ) (host, double)
// Precision: everything fp32 (gradient, projector, moments, U; GEMMs with CUBLAS_COMPUTE_32F,
// which is strict fp32 — no TF32 — so the GPU agrees with the twin to fp32 rounding); the bf16
// weight takes the fp32 result by stochastic rounding with the random bits of adamw.cuh
// (hash of seed, step, index): reproducible, and bit-exact after a resume.
// All matrices are row-major as the model stores them; GemmF32 is column-major like cuBLAS, and
// the launchers below do the row-major → column-major bookkeeping (row-major X is column-major Xᵀ).
// Variant: elementwise kernels are one thread per element (scalar loads: the slices of one
// layer's arena are not 16-byte aligned at odd sizes); the GEMMs dominate. Not yet measured on a
// GPU (written without device time; the refresh timing is printed by tests/test_galore_gpu).
// The fast refresh's helpers (splitmix_normal_f32, shift_diagonal_f32, flag_failure,
// reverse_columns_f32) and every refresh's sign convention (orient_singular_vectors_f32, r blocks)
// are small next to the GEMMs and cuSOLVER calls around them: a 4096×11008 r=256 refresh takes
// 6.0 ms warm, 8.6 ms cold on an H200 (tools/bench/bench_refresh,
// docs/bench/refresh.md).
#pragma once
#include <cusolverDn.h>

#include <algorithm>
#include <climits>
#include <string>

#include "kernels/adamw.cuh"
#include "kernels/common.cuh"
#include "kernels/matmul.cuh"

namespace owlore {

inline void cusolver_check(cusolverStatus_t status, const char* call, const char* file, int line) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuSOLVER error ") + std::to_string((int)status) + " in " + call + " at " +
                             file + ":" + std::to_string(line));
}
#define CUSOLVER_CHECK(call) ::owlore::cusolver_check((call), #call, __FILE__, __LINE__)

// ---- fp32 GEMM on cuBLASLt ------------------------------------------------------------------
// Column-major D (m×n) = alpha·op(A)·op(B) + beta·D, all fp32, CUBLAS_COMPUTE_32F (no TF32), on
// the plan cache of matmul.cuh: a repeated shape costs one cublasLtMatmul. One GemmF32 per stream.
class GemmF32 {
 public:
  // workspace: CachedGemm::kWorkspaceBytes shared with GEMMs on the same stream, or null (its own).
  explicit GemmF32(void* workspace = nullptr) : gemm_(workspace) {}

  void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
            int ldb, float beta, float* D, int ldd, cudaStream_t stream) {
    KERNEL_REQUIRE(m > 0 && n > 0 && k > 0, "gemm_f32", "sizes must be positive");
    KERNEL_REQUIRE(A && B && D, "gemm_f32", "null pointer");
    gemm_.run(trans_a, trans_b, m, n, k, alpha, CUDA_R_32F, A, lda, B, ldb, beta, CUDA_R_32F, D, ldd, stream);
  }

 private:
  CachedGemm gemm_;
};

namespace galore_detail {

static __global__ void adam_kernel(float* __restrict__ N, float* __restrict__ m, float* __restrict__ v,
                                   const float* __restrict__ R, int64_t n, float grad_scale, float beta1, float beta2,
                                   float eps) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // Same operation order as galore_apply_projected (the twin), so the moments agree to rounding.
  const float g = grad_scale * R[i];
  const float mm = beta1 * m[i] + (1.0f - beta1) * g;
  const float vv = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = mm;
  v[i] = vv;
  N[i] = mm / (sqrtf(vv) + eps);
}

static __global__ void weight_update_kernel(bf16* __restrict__ W, const float* __restrict__ U, int64_t n, float decay,
                                            float step_size, int step, uint32_t seed) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float p = __bfloat162float(W[i]);
  p = p - decay * p - step_size * U[i];
  W[i] = stochastic_round_bf16(p, adamw_detail::sr_bits_weight(adamw_detail::sr_key(seed, step, i, 0), i));
}

constexpr int kTile = 32;
// out[j*ld_out + i] = in[i*ld_in + j] for i < rows, j < cols (a 32×32 tile through shared memory).
static __global__ void transpose_kernel(float* __restrict__ out, const float* __restrict__ in, int rows, int cols,
                                        int ld_in, int ld_out) {
  __shared__ float tile[kTile][kTile + 1];
  const int i0 = blockIdx.y * kTile, j0 = blockIdx.x * kTile;
  for (int di = threadIdx.y; di < kTile; di += blockDim.y) {
    const int i = i0 + di, j = j0 + threadIdx.x;
    if (i < rows && j < cols) tile[di][threadIdx.x] = in[(int64_t)i * ld_in + j];
  }
  __syncthreads();
  for (int dj = threadIdx.y; dj < kTile; dj += blockDim.y) {
    const int j = j0 + dj, i = i0 + threadIdx.x;
    if (i < rows && j < cols) out[(int64_t)j * ld_out + i] = tile[threadIdx.x][dj];
  }
}

// Column-major k×k: out = the upper triangle of in (zeros below the diagonal).
// SplitMix64 (base/rng.h's Rng) seeked to its `draw`-th next_u64 (1-based) from `state`.
__device__ __forceinline__ uint64_t splitmix64_at(uint64_t state, uint64_t draw) {
  uint64_t z = state + draw * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// out[i + j·rows] = normal number e = i·cols + j of the stream: Rng::normal (Box-Muller in
// double from the uniforms of draws 2e+1, 2e+2), rounded to float.
static __global__ void splitmix_normal_kernel(float* __restrict__ out, uint64_t state, int rows, int cols) {
  const int64_t n = (int64_t)rows * cols;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    double u1 = (splitmix64_at(state, 2 * (uint64_t)e + 1) >> 11) * (1.0 / 9007199254740992.0);
    const double u2 = (splitmix64_at(state, 2 * (uint64_t)e + 2) >> 11) * (1.0 / 9007199254740992.0);
    if (u1 < 1e-300) u1 = 1e-300;
    const int64_t i = e / cols, j = e % cols;
    out[i + j * rows] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
  }
}

// Column-major k×k: W_ii += relative·W_ii.
static __global__ void shift_diagonal_kernel(float* __restrict__ W, int k, float relative) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < k; i += gridDim.x * blockDim.x) {
    const int64_t e = (int64_t)i * k + i;
    W[e] += relative * W[e];
  }
}

// *failure = 1 when *info != 0, or when a diagonal entry of the column-major k×k U is not a
// positive finite number (potrf does not report NaN pivots). One block.
static __global__ void flag_failure_kernel(int* __restrict__ failure, const int* __restrict__ info,
                                           const float* __restrict__ U, int k) {
  bool bad = threadIdx.x == 0 && *info != 0;
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const float d = U[(int64_t)i * k + i];
    bad |= !(d > 0.0f && d <= 3.402823466e38f);
  }
  if (bad) *failure = 1;
}

// out[:, j] = in[:, n_in − 1 − j] (column-major, ld rows) for j < cols.
static __global__ void reverse_columns_kernel(float* __restrict__ out, const float* __restrict__ in, int rows, int cols,
                                              int n_in) {
  const int64_t n = (int64_t)rows * cols;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e % rows, j = e / rows;
    out[e] = in[i + (int64_t)(n_in - 1 - j) * rows];
  }
}

// One block per vector: the index of the largest |x| (the lowest on a tie; none when all are
// zero or NaN), then the whole vector negated when that entry is negative.
static __global__ void orient_vectors_kernel(float* __restrict__ vectors, int length, int64_t vector_stride,
                                             int64_t element_stride) {
  float* v = vectors + (int64_t)blockIdx.x * vector_stride;
  float best = 0.0f;
  int index = INT_MAX;
  for (int i = threadIdx.x; i < length; i += blockDim.x) {  // increasing i: strictly greater keeps the lowest
    const float a = fabsf(v[i * element_stride]);
    if (a > best) best = a, index = i;
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
    if (other > best || (other == best && other_index < index)) best = other, index = other_index;
  }
  __shared__ float warp_best[32];
  __shared__ int warp_index[32];
  __shared__ bool negate;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_best[warp] = best, warp_index[warp] = index;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; w++)
      if (warp_best[w] > best || (warp_best[w] == best && warp_index[w] < index)) best = warp_best[w], index = warp_index[w];
    negate = index < length && v[index * element_stride] < 0.0f;
  }
  __syncthreads();
  if (negate)
    for (int i = threadIdx.x; i < length; i += blockDim.x) v[i * element_stride] = -v[i * element_stride];
}

}  // namespace galore_detail

// Adam on the projected gradient: N = m/(sqrt(v)+eps) after the moment update with grad_scale·R.
// m, v are read and written; N is overwritten. n = r_rows·r_cols.
inline void galore_adam(float* N /*(n)*/, float* m /*(n)*/, float* v /*(n)*/, const float* R /*(n)*/, int64_t n,
                        float grad_scale, float beta1, float beta2, float eps, cudaStream_t stream) {
  NvtxRange range("galore_adam");
  KERNEL_REQUIRE(n > 0, "galore_adam", "n must be positive");
  KERNEL_REQUIRE(N && m && v && R, "galore_adam", "null pointer");
  const int threads = 256;
  galore_detail::adam_kernel<<<ceil_div(n, threads), threads, 0, stream>>>(N, m, v, R, n, grad_scale, beta1, beta2,
                                                                           eps);
  CUDA_CHECK_LAUNCH();
}

// W ← W − lr·wd·W − step_size·U on bf16 weights, stochastic rounding with the random bits of
// adamw_update for (seed, step, index): the same call reproduces the same bits.
inline void galore_weight_update(bf16* W /*(rows,cols)*/, const float* U /*(rows,cols)*/, int64_t n, float lr,
                                 float weight_decay, float step_size, int step, uint32_t seed, cudaStream_t stream) {
  NvtxRange range("galore_weight_update");
  KERNEL_REQUIRE(n > 0, "galore_weight_update", "n must be positive");
  KERNEL_REQUIRE(step >= 1, "galore_weight_update", "step counts from 1");
  KERNEL_REQUIRE(W && U, "galore_weight_update", "null pointer");
  const int threads = 256;
  galore_detail::weight_update_kernel<<<ceil_div(n, threads), threads, 0, stream>>>(W, U, n, lr * weight_decay,
                                                                                    step_size, step, seed);
  CUDA_CHECK_LAUNCH();
}

// Row-major out (cols × rows, leading dimension ld_out) = inᵀ, in row-major (rows × cols, ld_in).
inline void transpose_f32(float* out /*(cols,ld_out)*/, const float* in /*(rows,ld_in)*/, int rows, int cols,
                          int ld_in, int ld_out, cudaStream_t stream) {
  NvtxRange range("transpose_f32");
  KERNEL_REQUIRE(rows > 0 && cols > 0 && ld_in >= cols && ld_out >= rows, "transpose_f32", "bad sizes");
  KERNEL_REQUIRE(out && in && out != in, "transpose_f32", "null or aliased pointer");
  const dim3 grid(ceil_div(cols, galore_detail::kTile), ceil_div(rows, galore_detail::kTile));
  galore_detail::transpose_kernel<<<grid, dim3(galore_detail::kTile, 8), 0, stream>>>(out, in, rows, cols, ld_in,
                                                                                      ld_out);
  CUDA_CHECK_LAUNCH();
}

// ---- pieces of the fast projector refresh (optim/galore_gpu: randomized range finder, CholeskyQR,
// Rayleigh-Ritz through a small symmetric eigensolver) ------------------------------------------

// Ω for the randomized range finder: out (rows×cols, column-major) holds the standard normals
// number i·cols + j (row-major draw order) of SplitMix64 from `state`, each Rng::normal (two
// next_u64, Box-Muller in double) rounded to float: the numbers rows·cols calls of
// Rng{state}.normal() return, up to the last bit of device vs host log/cos. Afterwards the host
// Rng skips them: state += 2·rows·cols·0x9E3779B97F4A7C15 (SplitMix64 is seekable). CPU twin:
// base/rng.h itself.
inline void splitmix_normal_f32(float* out /*(rows,cols) col-major*/, uint64_t state, int rows, int cols,
                                cudaStream_t stream) {
  NvtxRange range("splitmix_normal_f32");
  KERNEL_REQUIRE(rows > 0 && cols > 0, "splitmix_normal_f32", "sizes must be positive");
  KERNEL_REQUIRE(out, "splitmix_normal_f32", "null pointer");
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div((int64_t)rows * cols, threads), 4096);
  galore_detail::splitmix_normal_kernel<<<(unsigned)blocks, threads, 0, stream>>>(out, state, rows, cols);
  CUDA_CHECK_LAUNCH();
}

// W_ii += relative·W_ii on a column-major k×k Gram: the shift of shifted CholeskyQR (Fukaya et al.
// 2020), taken relative to each column's squared norm, so it is the same shift of the Gram of the
// unit-norm columns whatever their scales.
inline void shift_diagonal_f32(float* W /*(k,k) col-major*/, int k, float relative, cudaStream_t stream) {
  NvtxRange range("shift_diagonal_f32");
  KERNEL_REQUIRE(k > 0 && W, "shift_diagonal_f32", "bad arguments");
  const int threads = 256;
  galore_detail::shift_diagonal_kernel<<<(unsigned)std::min<int64_t>(ceil_div(k, threads), 64), threads, 0, stream>>>(
      W, k, relative);
  CUDA_CHECK_LAUNCH();
}

// Sets *failure (device int) to 1 when a cuSOLVER call's *info is nonzero or, with U (k > 0), when
// a diagonal entry of the Cholesky factor U is not positive and finite; leaves it alone otherwise.
// Lets a sequence of factorizations run without a host round trip and be checked once at its end.
inline void flag_failure(int* failure /*(1)*/, const int* info /*(1)*/, const float* U /*(k,k) col-major or null*/,
                         int k, cudaStream_t stream) {
  NvtxRange range("flag_failure");
  KERNEL_REQUIRE(failure && info && (k == 0 || U), "flag_failure", "null pointer");
  galore_detail::flag_failure_kernel<<<1, 256, 0, stream>>>(failure, info, U, k);
  CUDA_CHECK_LAUNCH();
}

// Column-major out (rows×cols) = the last cols columns of in (rows×n_in, ld rows), last first:
// eigenvectors of an ascending eigensolver in descending order.
inline void reverse_columns_f32(float* out /*(rows,cols) col-major*/, const float* in /*(rows,n_in) col-major*/,
                                int rows, int cols, int n_in, cudaStream_t stream) {
  NvtxRange range("reverse_columns_f32");
  KERNEL_REQUIRE(rows > 0 && cols > 0 && cols <= n_in, "reverse_columns_f32", "bad sizes");
  KERNEL_REQUIRE(out && in && out != in, "reverse_columns_f32", "null or aliased pointer");
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div((int64_t)rows * cols, threads), 4096);
  galore_detail::reverse_columns_kernel<<<(unsigned)blocks, threads, 0, stream>>>(out, in, rows, cols, n_in);
  CUDA_CHECK_LAUNCH();
}

// The projectors' sign convention (optim/svd_cpu.h, orient_singular_vectors, is the twin and says
// why): vector k (entry i at vectors[k·vector_stride + i·element_stride]) is negated when its
// entry of largest magnitude (the lowest index on a tie) is negative. Rows of Q (r×n): (r, n, n, 1);
// columns of P (m×r): (r, m, 1, r), strided but r·m floats next to a refresh's GEMMs.
inline void orient_singular_vectors_f32(float* vectors, int count, int length, int64_t vector_stride,
                                        int64_t element_stride, cudaStream_t stream) {
  NvtxRange range("orient_singular_vectors_f32");
  KERNEL_REQUIRE(count > 0 && length > 0, "orient_singular_vectors_f32", "count and length must be positive");
  KERNEL_REQUIRE(vectors, "orient_singular_vectors_f32", "null pointer");
  const int threads = (int)std::min<int64_t>(256, (length + 31) / 32 * 32);  // whole warps
  galore_detail::orient_vectors_kernel<<<(unsigned)count, threads, 0, stream>>>(vectors, length, vector_stride,
                                                                                element_stride);
  CUDA_CHECK_LAUNCH();
}

// Projection, fp32: right R (m×r) = G·Qᵀ; left R (r×n) = Pᵀ·G. Overwrites R, or adds to it with
// accumulate (projection is linear: micro-batches add their R as they would add their G).
//   column-major: right Rᵀ (r×m) = op_T(Q stored n×r)·(G stored n×m); left Rᵀ (n×r) = (G stored n×m)·op_T(P stored r×m)
inline void galore_project(GemmF32& gemm, float* R /*right (m,r) | left (r,n)*/, const float* G /*(m,n)*/,
                           const float* projector /*right Q (r,n) | left P (m,r)*/, int m, int n, int r, bool right,
                           cudaStream_t stream, bool accumulate = false) {
  NvtxRange range("galore_project");
  KERNEL_REQUIRE(m > 0 && n > 0 && r > 0 && r <= (m < n ? m : n), "galore_project", "need 1 <= r <= min(m, n)");
  const float beta = accumulate ? 1.0f : 0.0f;
  if (right) gemm.gemm(true, false, r, m, n, 1.0f, projector, n, G, n, beta, R, r, stream);
  else gemm.gemm(false, true, n, r, m, 1.0f, G, n, projector, r, beta, R, n, stream);
}

// Back-projection, fp32: right U (m×n) = alpha·N·Q; left U = alpha·P·N. Overwrites U.
//   column-major Uᵀ (n×m): right (Q stored n×r)·(N stored r×m); left (N stored n×r)·(P stored r×m)
inline void galore_back_project(GemmF32& gemm, float* U /*(m,n)*/, const float* N /*right (m,r) | left (r,n)*/,
                                const float* projector /*right Q (r,n) | left P (m,r)*/, int m, int n, int r, bool right,
                                float alpha, cudaStream_t stream) {
  NvtxRange range("galore_back_project");
  KERNEL_REQUIRE(m > 0 && n > 0 && r > 0 && r <= (m < n ? m : n), "galore_back_project", "need 1 <= r <= min(m, n)");
  if (right) gemm.gemm(false, false, n, m, r, alpha, projector, n, N, r, 0.0f, U, n, stream);
  else gemm.gemm(false, false, n, m, r, alpha, N, n, projector, r, 0.0f, U, n, stream);
}

}  // namespace owlore
