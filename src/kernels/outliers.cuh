// Layerwise outlier scores (DESIGN.md §1; OWL, Yin et al. 2024, §3; the CPU reference is
// src/optim/outliers.cpp, which these kernels reproduce on bf16 data):
//   column_sum_squares:  s_j += Σ_rows x_ij²             x bf16 (N, C), s fp32 (C)
//   outlier_ratio:       A_ij = |W_ij| · sqrt(s_j) over the concatenation of up to 4 matrices
//                        (a layer's fused qkv, o, gate_up, down = its 7 HF matrices),
//                        D = 100 · #{A > M · mean(A)} / #A.
// No backward: calibration only, on a frozen model.
//
// Determinism: every reduction runs in an order fixed by the shapes alone (grid sizes never depend
// on the device), no float atomics, so the same inputs give bit-identical results on every run.
//   column_sum_squares: the N rows are cut into at most 1024 chunks of ceil(N/chunks) rows; a
//   block sums its 32 columns of one chunk (fp32, each thread rows ty, ty+8, ..., then the 8
//   threads of a column in order), writing one partial per (chunk, column); a second kernel adds
//   a column's partials in chunk order in double and adds the result (rounded once) to s.
//   outlier_ratio: two passes over the weights as the CPU does (sum, then count), a fixed grid of
//   256 blocks; per-block double partials reduced in a fixed order by one block.
// Precision: s_j partials are fp32 (at most ceil(N/1024)/8 terms per thread at N > 256K rows,
// 32 at the calibration sizes), chunk sums double, the accumulator fp32 (DESIGN.md §1 says fp32; at
// 128 x 2048 tokens the relative rounding of s is ~1e-7, far below the bf16 activations' own
// error). A is formed in double exactly as the CPU forms it: (double)|w| times the correctly
// rounded double sqrt of (double)s_j, with __dmul_rn so no FMA contraction changes it; its sum is
// double. With the same bf16-rounded weights and the same s, the GPU therefore counts the same
// entries as layer_outlier_ratio (the only difference is the order of the double sum of A, ~1e-16
// relative on the cut: an entry would have to sit that close to the cut to flip).
// Not measured on a device yet: calibration runs once per training job and reads each weight
// twice (a 7B layer's 200M bf16 entries, well under a millisecond at HBM bandwidth).
#pragma once
#include "kernels/common.cuh"

namespace owlore {

// One weight matrix of a layer and the energies of its input channels.
struct OutlierMatrix {
  const bf16* weight = nullptr;   // (rows, cols), row-major (out, in)
  const float* energy = nullptr;  // (cols) s_j = Σ_tokens x_j² of the matrix's input
  int64_t rows = 0;
  int cols = 0;
};
constexpr int kMaxOutlierMatrices = 4;

namespace outliers_detail {

constexpr int kColumnTile = 32;         // columns per block (one warp-wide row segment)
constexpr int kRowThreads = 8;          // rows read at once per block
constexpr int kMaxChunks = 1024;        // row chunks at most (bounds the partials workspace)
constexpr int kMinChunkRows = 256;
constexpr int kScoreBlocks = 256;       // fixed grid of the scoring passes
constexpr int kScoreThreads = 256;

inline int row_chunks(int N) {
  const int64_t chunks = ((int64_t)N + kMinChunkRows - 1) / kMinChunkRows;
  return chunks < 1 ? 1 : chunks > kMaxChunks ? kMaxChunks : (int)chunks;
}

// partial[chunk, j] = Σ_{rows of chunk} x_ij² (fp32, fixed order).
static __global__ void column_sum_squares_partial_kernel(float* __restrict__ partial, const bf16* __restrict__ x, int N,
                                                         int C, int rows_per_chunk) {
  __shared__ float column_sums[kRowThreads][kColumnTile + 1];
  const int tx = threadIdx.x % kColumnTile, ty = threadIdx.x / kColumnTile;
  const int col = blockIdx.x * kColumnTile + tx;
  const int chunk = blockIdx.y;
  const int64_t first = (int64_t)chunk * rows_per_chunk;
  const int64_t last = first + rows_per_chunk < N ? first + rows_per_chunk : N;
  float acc = 0.0f;
  if (col < C)
    for (int64_t r = first + ty; r < last; r += kRowThreads) {
      const float v = __bfloat162float(x[r * C + col]);
      acc = fmaf(v, v, acc);
    }
  column_sums[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < C) {
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kRowThreads; k++) sum += column_sums[k][tx];
    partial[(int64_t)chunk * C + col] = sum;
  }
}

// s_j += Σ_chunks partial[chunk, j], in chunk order, in double.
static __global__ void column_sum_squares_final_kernel(float* __restrict__ sums, const float* __restrict__ partial,
                                                       int C, int chunks) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= C) return;
  double acc = 0.0;
  for (int k = 0; k < chunks; k++) acc += (double)partial[(int64_t)k * C + col];
  sums[col] = (float)((double)sums[col] + acc);
}

// Sum over the block in a fixed order (shuffle tree, then warp 0 over the warps' partials).
template <typename T>
static __device__ __forceinline__ T block_sum_fixed(T x) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = lane < n_warps ? warp_sums[lane] : T(0);
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

struct ScoredMatrices {
  OutlierMatrix m[kMaxOutlierMatrices];
  int n;
};

// A_ij exactly as the CPU forms it (see the header comment).
static __device__ __forceinline__ double score(bf16 w, float s) {
  return __dmul_rn(fabs((double)__bfloat162float(w)), sqrt((double)s));
}

// Pass 1: partial_sum[block] = Σ A over the block's rows (row r of every matrix goes to block
// r mod gridDim.x; each thread takes columns threadIdx.x, + blockDim.x, ...).
static __global__ void outlier_sum_kernel(double* __restrict__ partial_sum, ScoredMatrices mats) {
  double acc = 0.0;
  for (int k = 0; k < mats.n; k++) {
    const OutlierMatrix m = mats.m[k];
    for (int64_t r = blockIdx.x; r < m.rows; r += gridDim.x) {
      const bf16* row = m.weight + r * m.cols;
      for (int j = threadIdx.x; j < m.cols; j += blockDim.x) acc += score(row[j], m.energy[j]);
    }
  }
  acc = block_sum_fixed(acc);
  if (threadIdx.x == 0) partial_sum[blockIdx.x] = acc;
}

// cut = M · (Σ partial_sum) / #A, the partials added in a fixed order.
static __global__ void outlier_cut_kernel(double* __restrict__ cut, const double* __restrict__ partial_sum, int n_partial,
                                          double threshold, int64_t count) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) acc += partial_sum[i];
  acc = block_sum_fixed(acc);
  if (threadIdx.x == 0) *cut = threshold * acc / (double)count;
}

// Pass 2: partial_count[block] = #{A > cut} over the block's rows.
static __global__ void outlier_count_kernel(unsigned long long* __restrict__ partial_count, const double* __restrict__ cut,
                                            ScoredMatrices mats) {
  const double c = *cut;
  unsigned long long n = 0;
  for (int k = 0; k < mats.n; k++) {
    const OutlierMatrix m = mats.m[k];
    for (int64_t r = blockIdx.x; r < m.rows; r += gridDim.x) {
      const bf16* row = m.weight + r * m.cols;
      for (int j = threadIdx.x; j < m.cols; j += blockDim.x) n += score(row[j], m.energy[j]) > c;
    }
  }
  n = block_sum_fixed(n);
  if (threadIdx.x == 0) partial_count[blockIdx.x] = n;
}

static __global__ void outlier_ratio_final_kernel(double* __restrict__ ratio,
                                                  const unsigned long long* __restrict__ partial_count, int n_partial,
                                                  int64_t count) {
  unsigned long long n = 0;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) n += partial_count[i];
  n = block_sum_fixed(n);
  if (threadIdx.x == 0) *ratio = 100.0 * (double)n / (double)count;
}

}  // namespace outliers_detail

// Floats of workspace column_sum_squares needs for N rows of C columns (at most 1024·C).
inline size_t column_sum_squares_workspace_floats(int N, int C) {
  return (size_t)outliers_detail::row_chunks(N) * (size_t)C;
}

// sums[j] += Σ_i x[i,j]² (fp32 accumulator, deterministic). partials is scratch, overwritten.
inline void column_sum_squares(float* sums /*(C) +=*/, float* partials /*(column_sum_squares_workspace_floats(N,C))*/,
                               const bf16* x /*(N,C)*/, int N, int C, cudaStream_t stream) {
  using namespace outliers_detail;
  NvtxRange range("column_sum_squares");
  KERNEL_REQUIRE(N >= 1 && C >= 1, "column_sum_squares", "N and C must be >= 1");
  KERNEL_REQUIRE(sums && partials && x, "column_sum_squares", "null pointer");
  const int chunks = row_chunks(N);
  const int rows_per_chunk = (int)(((int64_t)N + chunks - 1) / chunks);
  const dim3 grid(ceil_div(C, kColumnTile), chunks);
  column_sum_squares_partial_kernel<<<grid, kColumnTile * kRowThreads, 0, stream>>>(partials, x, N, C, rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  column_sum_squares_final_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(sums, partials, C, chunks);
  CUDA_CHECK_LAUNCH();
}

// Bytes of workspace outlier_ratio needs.
inline size_t outlier_ratio_workspace_bytes() {
  using namespace outliers_detail;
  return kScoreBlocks * (sizeof(double) + sizeof(unsigned long long)) + sizeof(double);
}

// *ratio (device) = 100 · #{A > threshold · mean(A)} / #A over the concatenation of the
// matrices' scores A_ij = |W_ij| · sqrt(s_j). Leaves the result on the device (no sync).
inline void outlier_ratio(double* ratio /*(1) device*/, void* workspace /*(outlier_ratio_workspace_bytes) device*/,
                          size_t workspace_bytes, const OutlierMatrix* matrices /*(n_matrices) host array*/,
                          int n_matrices, double threshold, cudaStream_t stream) {
  using namespace outliers_detail;
  NvtxRange range("outlier_ratio");
  KERNEL_REQUIRE(n_matrices >= 1 && n_matrices <= kMaxOutlierMatrices, "outlier_ratio", "1 to 4 matrices");
  KERNEL_REQUIRE(ratio && workspace && matrices, "outlier_ratio", "null pointer");
  KERNEL_REQUIRE(workspace_bytes >= outlier_ratio_workspace_bytes(), "outlier_ratio", "workspace too small");
  KERNEL_REQUIRE(threshold > 0.0, "outlier_ratio", "threshold must be > 0");
  KERNEL_REQUIRE(is_aligned16(workspace), "outlier_ratio", "workspace must be 16-byte aligned");
  ScoredMatrices mats{};
  mats.n = n_matrices;
  int64_t count = 0;
  for (int k = 0; k < n_matrices; k++) {
    const OutlierMatrix& m = matrices[k];
    KERNEL_REQUIRE(m.weight && m.energy, "outlier_ratio", "null matrix or energy pointer");
    KERNEL_REQUIRE(m.rows >= 1 && m.cols >= 1, "outlier_ratio", "matrix rows and cols must be >= 1");
    mats.m[k] = m;
    count += m.rows * (int64_t)m.cols;
  }
  double* partial_sum = static_cast<double*>(workspace);
  unsigned long long* partial_count = reinterpret_cast<unsigned long long*>(partial_sum + kScoreBlocks);
  double* cut = reinterpret_cast<double*>(partial_count + kScoreBlocks);
  outlier_sum_kernel<<<kScoreBlocks, kScoreThreads, 0, stream>>>(partial_sum, mats);
  CUDA_CHECK_LAUNCH();
  outlier_cut_kernel<<<1, kScoreThreads, 0, stream>>>(cut, partial_sum, kScoreBlocks, threshold, count);
  CUDA_CHECK_LAUNCH();
  outlier_count_kernel<<<kScoreBlocks, kScoreThreads, 0, stream>>>(partial_count, cut, mats);
  CUDA_CHECK_LAUNCH();
  outlier_ratio_final_kernel<<<1, kScoreThreads, 0, stream>>>(ratio, partial_count, kScoreBlocks, count);
  CUDA_CHECK_LAUNCH();
}

}  // namespace owlore
