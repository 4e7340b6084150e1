#include "optim/galore_gpu.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "base/error.h"
#include "kernels/adamw.cuh"
#include "kernels/galore.cuh"

namespace owlore {

// The working matrix. G (m×n, row-major) is stored as the column-major S = Gᵀ (n×m, ld n). The
// refresh wants the top right singular vectors of A = G (right side, am = m ≥ an = n) or
// A = Gᵀ (left side, am = n > an = m): A is S viewed transposed (right) or S itself (left), so every
// product with A is one GEMM on G's storage with a transpose flag, and A is never materialized
// (except as gesvd's destroyable input in exact mode).
namespace {

struct Dims {
  int am, an, r;
  bool right;
};
Dims dims_of(const GaloreGpuMatrix& s) {
  const bool right = s.side == ProjectionSide::right;
  return {right ? s.rows : s.cols, right ? s.cols : s.rows, s.rank, right};
}

int64_t align_floats(int64_t n) { return (n + 63) / 64 * 64; }  // 256-byte pieces

constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ull;  // Rng's state increment per next_u64
// CholeskyQR: passes, and the first pass's diagonal shift in units of u·(sqrt(rows·k) + k), u the
// fp32 unit roundoff: a bound on the rounding error of the Gram of unit-norm columns (random-walk
// sums, spectral norm of a k×k error matrix) plus Cholesky's own, with a factor 4 of margin. It
// leaves cond(Q1)² ≈ shift/λmin(unit-column Gram), which the two plain passes clean up to
// orthonormality while that stays below ~1e6.
constexpr int kCholeskyPasses = 3;
constexpr double kShiftUnits = 4.0;

void blas_check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error ") + std::to_string((int)status) + " (" +
                             cublasGetStatusName(status) + ") in " + call + " at " + file + ":" + std::to_string(line));
}
#define BLAS_CHECK(call) blas_check((call), #call, __FILE__, __LINE__)

}  // namespace

int64_t galore_gpu_r_floats(int rows, int cols, const GaloreConfig& config) {
  return align_floats((int64_t)std::min({config.rank, rows, cols}) * std::max(rows, cols));
}

int64_t galore_gpu_state_floats(int rows, int cols, const GaloreConfig& config) {
  const int64_t r = std::min({config.rank, rows, cols});
  return align_floats(r * std::min(rows, cols)) + 2 * galore_gpu_r_floats(rows, cols, config);
}

GaloreGpuMatrix galore_gpu_matrix(int rows, int cols, const GaloreConfig& config, float* memory) {
  OWLORE_REQUIRE(rows >= 1 && cols >= 1, "GaLore (GPU): expected a non-empty weight, got ", rows, " x ", cols);
  OWLORE_REQUIRE(config.rank >= 1, "GaLore (GPU): rank must be >= 1, got ", config.rank);
  OWLORE_REQUIRE(config.proj_gap >= 1, "GaLore (GPU): projector refresh gap T must be >= 1, got ", config.proj_gap);
  OWLORE_REQUIRE(memory != nullptr, "GaLore (GPU): no state memory");
  GaloreGpuMatrix s;
  s.rows = rows, s.cols = cols;
  s.rank = std::min({config.rank, rows, cols});
  s.side = rows >= cols ? ProjectionSide::right : ProjectionSide::left;  // always the smaller side
  s.projector = memory;
  s.m = memory + align_floats(s.projector_numel());
  s.v = s.m + align_floats(s.r_numel());
  return s;
}

void galore_gpu_reset(GaloreGpuMatrix& s, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(s.m, 0, s.r_numel() * sizeof(float), stream));
  CUDA_CHECK(cudaMemsetAsync(s.v, 0, s.r_numel() * sizeof(float), stream));
  s.has_projector = false;
  s.step = 0;
  s.refreshes = 0;
  s.captured_energy = 0.0;
}

GaloreGpu::GaloreGpu(const GaloreConfig& config, const std::vector<std::pair<int, int>>& shapes, cudaStream_t stream)
    : config_(config), stream_(stream) {
  OWLORE_REQUIRE(!shapes.empty(), "GaLore (GPU): no matrices to optimize");
  OWLORE_REQUIRE(config.rank >= 1 && config.proj_gap >= 1, "GaLore (GPU): rank and proj_gap must be >= 1");
  OWLORE_REQUIRE(config.oversample >= 0 && config.power_iters >= 0,
                 "GaLore (GPU): oversample and power_iters must be >= 0");
  // A cuBLAS handle, and the one cuSOLVER creates inside its own, allocate cuBLAS's default
  // workspace unless CUBLAS_WORKSPACE_CONFIG says otherwise: cusolverDnCreate took 96 MiB on the
  // H200, 36 MiB with 4 MiB (tools/bench/probe_memory.cu). The factorizations here work on panels of r
  // columns, for which 4 MiB is ample. A setting of the user's is kept. The variable is read when
  // a handle is created and is process-wide: handles created earlier in the process keep theirs.
  setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:1", /*overwrite=*/0);
  CUSOLVER_CHECK(cusolverDnCreate(&solver_));
  CUSOLVER_CHECK(cusolverDnSetStream(solver_, stream_));
  if (config.mode == ProjectorMode::fast) {
    BLAS_CHECK(cublasCreate(&blas_));
    BLAS_CHECK(cublasSetStream(blas_, stream_));
  }
  int lwork = 0;
  auto need = [&](int w) { lwork = std::max(lwork, w); };
  for (const auto& [rows, cols] : shapes) {
    OWLORE_REQUIRE(rows >= 1 && cols >= 1, "GaLore (GPU): bad shape ", rows, " x ", cols);
    const int am = std::max(rows, cols), an = std::min(rows, cols), r = std::min(config.rank, an);
    max_r_numel_ = std::max(max_r_numel_, (int64_t)r * am);
    max_mn_ = std::max(max_mn_, (int64_t)am * an);
    int w = 0;
    if (config.mode == ProjectorMode::exact) {
      buf_a_floats_ = std::max(buf_a_floats_, (int64_t)am * an);
      buf_b_floats_ = std::max(buf_b_floats_, (int64_t)an * an);
      small_floats_ = std::max<int64_t>(small_floats_, an);
      CUSOLVER_CHECK(cusolverDnSgesvd_bufferSize(solver_, am, an, &w)), need(w);
    } else {
      const int k = std::min({r + config.oversample, am, an});
      max_k_ = std::max(max_k_, k);
      buf_a_floats_ = std::max(buf_a_floats_, (int64_t)am * k);
      buf_b_floats_ = std::max(buf_b_floats_, (int64_t)an * k);
      small_floats_ = std::max<int64_t>(small_floats_, (int64_t)k * k);
      for (const int kk : {k, r}) {  // cold start works with k columns, a warm start with r
        for (const int rows_q : {am, an}) {  // the Householder fallback of orthonormalize
          CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(solver_, rows_q, kk, nullptr, rows_q, &w)), need(w);
          CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(solver_, rows_q, kk, kk, nullptr, rows_q, nullptr, &w)), need(w);
        }
        CUSOLVER_CHECK(cusolverDnSpotrf_bufferSize(solver_, CUBLAS_FILL_MODE_UPPER, kk, nullptr, kk, &w)), need(w);
        CUSOLVER_CHECK(cusolverDnSsyevd_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, kk,
                                                   nullptr, kk, nullptr, &w)),
            need(w);
      }
    }
  }
  solver_lwork_ = lwork;
  const int64_t floats = 2 * align_floats(max_r_numel_) + align_floats(buf_a_floats_) + align_floats(buf_b_floats_) +
                         2 * align_floats(small_floats_) + 2 * align_floats(std::max<int64_t>(small_floats_, 1)) +
                         align_floats(std::max(lwork, 1)) + align_floats(2 + sum_squares_scratch_floats()) +
                         align_floats(2);  // info, failure flag
  workspace_bytes_ = (size_t)floats * sizeof(float);
}

GaloreGpu::~GaloreGpu() {
  if (owns_workspace_) cudaFree(workspace_);
  for (cudaEvent_t e : phase_events_) cudaEventDestroy(e);
  if (blas_) cublasDestroy(blas_);
  if (solver_) cusolverDnDestroy(solver_);
}

void GaloreGpu::bind(void* workspace, void* gemm_workspace) {
  OWLORE_REQUIRE(workspace_ == nullptr, "GaLore (GPU): workspace bound twice");
  gemm_ = std::make_unique<GemmF32>(gemm_workspace);
  if (!workspace) {
    CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes_));
    owns_workspace_ = true;
  }
  workspace_ = workspace;
  float* p = static_cast<float*>(workspace);
  auto take = [&](int64_t n) {
    float* out = p;
    p += align_floats(std::max<int64_t>(n, 1));
    return out;
  };
  R_ = take(max_r_numel_);
  N_ = take(max_r_numel_);
  buf_a_ = take(buf_a_floats_);
  buf_b_ = take(buf_b_floats_);
  small_a_ = take(small_floats_);
  small_b_ = take(small_floats_);
  sigma_ = take(std::max<int64_t>(small_floats_, 1));
  tau_ = take(std::max<int64_t>(small_floats_, 1));
  solver_work_ = take(solver_lwork_);
  norms_ = take(2 + sum_squares_scratch_floats());
  info_ = reinterpret_cast<int*>(take(2));
  failure_ = info_ + 1;
  OWLORE_REQUIRE((char*)p - (char*)workspace <= (ptrdiff_t)workspace_bytes_, "GaLore (GPU): workspace layout overflow");
}

bool GaloreGpu::refresh_due(const GaloreGpuMatrix& s) const {
  return !s.has_projector || s.step % config_.proj_gap == 0;
}

void GaloreGpu::check_info(const char* what) {
  int info = 0;
  CUDA_CHECK(cudaMemcpyAsync(&info, info_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  OWLORE_REQUIRE(info == 0, "GaLore (GPU): cuSOLVER ", what, " returned info = ", info,
                 info > 0 ? " (the SVD did not converge)" : " (an invalid argument)");
}

void GaloreGpu::apply_a(float* out, const float* G, const float* X, int ldx, bool trans_x, int k,
                        const GaloreGpuMatrix& s, bool transpose_a) {
  const Dims d = dims_of(s);
  const int out_rows = transpose_a ? d.an : d.am, inner = transpose_a ? d.am : d.an;
  // S = G's storage, column-major n×m (ld = cols). A·X: right A = Sᵀ, left A = S; Aᵀ·X the other way.
  const bool ta = transpose_a ? !d.right : d.right;
  gemm_->gemm(ta, trans_x, out_rows, k, inner, 1.0f, G, s.cols, X, ldx, 0.0f, out, out_rows, stream_);
}

void GaloreGpu::orthonormalize(float* Y, int rows, int k, bool householder) {
  NvtxRange range("galore_orthonormalize");
  const int slot = phase_begin(Phase::orthonormalize);
  if (householder) {
    CUSOLVER_CHECK(cusolverDnSgeqrf(solver_, rows, k, Y, rows, tau_, solver_work_, solver_lwork_, info_));
    CUSOLVER_CHECK(cusolverDnSorgqr(solver_, rows, k, k, Y, rows, tau_, solver_work_, solver_lwork_, info_));
  } else {
    // Shifted CholeskyQR3: W = YᵀY = UᵀU (U upper), Y ← Y·U⁻¹ has YᵀY = I; repeated, as each pass
    // leaves an error of about u·cond(Y)². Measured on an H200 (11008×256): Gram GEMM 0.06 ms,
    // potrf 0.17 ms, trsm 0.14 ms a pass, against 2.9 ms for geqrf + orgqr.
    const float shift = (float)(kShiftUnits * (FLT_EPSILON / 2) * (std::sqrt((double)rows * k) + k));
    const float one = 1.0f;
    for (int pass = 0; pass < kCholeskyPasses; pass++) {
      gemm_->gemm(true, false, k, k, rows, 1.0f, Y, rows, Y, rows, 0.0f, small_a_, k, stream_);  // W = YᵀY (k×k)
      if (pass == 0) shift_diagonal_f32(small_a_, k, shift, stream_);
      CUSOLVER_CHECK(
          cusolverDnSpotrf(solver_, CUBLAS_FILL_MODE_UPPER, k, small_a_, k, solver_work_, solver_lwork_, info_));
      flag_failure(failure_, info_, small_a_, k, stream_);
      BLAS_CHECK(cublasStrsm(blas_, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, rows,
                             k, &one, small_a_, k, Y, rows));
    }
  }
  phase_end(slot);
}

void GaloreGpu::profile_phases(bool on) {
  if (on && phase_events_.empty()) {
    phase_events_.resize(128);  // 64 pairs: more than a refresh with a few power iterations uses
    for (cudaEvent_t& e : phase_events_) CUDA_CHECK(cudaEventCreate(&e));
    phase_kinds_.resize(64);
  } else if (!on) {
    for (cudaEvent_t e : phase_events_) cudaEventDestroy(e);
    phase_events_.clear();
    phase_kinds_.clear();
  }
  phase_count_ = 0;
}

int GaloreGpu::phase_begin(Phase phase) {
  if (phase_events_.empty() || 2 * (phase_count_ + 1) > (int)phase_events_.size()) return -1;
  const int slot = phase_count_++;
  phase_kinds_[slot] = phase;
  CUDA_CHECK(cudaEventRecord(phase_events_[2 * slot], stream_));
  return slot;
}

void GaloreGpu::phase_end(int slot) {
  if (slot >= 0) CUDA_CHECK(cudaEventRecord(phase_events_[2 * slot + 1], stream_));
}

GaloreGpu::RefreshPhases GaloreGpu::refresh_phases() const {
  RefreshPhases out;
  out.fell_back = last_fell_back_;
  for (int slot = 0; slot < phase_count_; slot++) {
    CUDA_CHECK(cudaEventSynchronize(phase_events_[2 * slot + 1]));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, phase_events_[2 * slot], phase_events_[2 * slot + 1]));
    switch (phase_kinds_[slot]) {
      case Phase::products: out.products_ms += ms; break;
      case Phase::orthonormalize: out.orthonormalize_ms += ms; break;
      case Phase::rotation: out.rotation_ms += ms; break;
      case Phase::check: out.check_ms += ms; break;
    }
  }
  return out;
}

void GaloreGpu::refresh_exact(GaloreGpuMatrix& s, const float* G) {
  NvtxRange range("galore_refresh_exact");
  const Dims d = dims_of(s);
  // Column-major A (am×an), destroyed by gesvd: right A = G, the transpose of G's storage; left
  // A = Gᵀ, whose column-major form is G's storage itself.
  if (d.right) transpose_f32(buf_a_, G, s.rows, s.cols, s.cols, s.rows, stream_);
  else CUDA_CHECK(cudaMemcpyAsync(buf_a_, G, (size_t)s.rows * s.cols * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  float* VT = buf_b_;  // column-major an×an; its rows are the right singular vectors, largest first
  CUSOLVER_CHECK(cusolverDnSgesvd(solver_, 'N', 'S', d.am, d.an, buf_a_, d.am, sigma_, nullptr, d.am, VT, d.an,
                                  solver_work_, solver_lwork_, tau_, info_));
  check_info("gesvd (exact projector)");
  // right: Q (r×n) row-major, Q[k][j] = VT(k, j) = VT[k + j·an]: a transpose of the first r rows.
  // left: P (m×r) row-major, P[i][k] = VT(k, i) = VT[k + i·an]: the first r rows, column by column.
  if (d.right) transpose_f32(s.projector, VT, d.an, d.r, d.an, d.an, stream_);
  else
    CUDA_CHECK(cudaMemcpy2DAsync(s.projector, d.r * sizeof(float), VT, d.an * sizeof(float), d.r * sizeof(float), d.an,
                                 cudaMemcpyDeviceToDevice, stream_));
}

void GaloreGpu::refresh_fast(GaloreGpuMatrix& s, const float* G, Rng& rng) {
  NvtxRange range("galore_refresh_fast");
  const Dims d = dims_of(s);
  const bool warm = config_.warm_start && s.has_projector;
  const int kk = warm ? d.r : std::min({d.r + config_.oversample, d.am, d.an});  // columns of the basis B
  // Ω (cold): the twin draws am·kk normals from rng, row by row, two next_u64 each. The device
  // computes them from the stream's current state; the host Rng skips past them.
  const uint64_t omega_state = rng.state;
  if (!warm) rng.state += 2 * (uint64_t)d.am * (uint64_t)kk * kSplitMixGamma;
  phase_count_ = 0;
  last_fell_back_ = false;
  // B (an×kk, column-major, buf_b_): an orthonormal basis of the approximate top right singular
  // subspace; then M = (A·B)ᵀ(A·B) and its eigenvectors in small_a_. The first attempt
  // orthonormalizes with CholeskyQR, whose failures are flagged on the device; if any was, the
  // same computation (same Ω, same previous projector: nothing of the state is written until the
  // end) runs again with Householder QR.
  for (int attempt = 0;; attempt++) {
    const bool householder = attempt > 0;
    CUDA_CHECK(cudaMemsetAsync(failure_, 0, sizeof(int), stream_));
    if (warm) {
      // X = the previous projector's rows as columns (an×r): right Q's storage is that already;
      // left P's storage is its transpose.
      int slot = phase_begin(Phase::products);
      if (d.right) apply_a(buf_a_, G, s.projector, d.an, false, kk, s, false);  // Z = A·X (am×r)
      else apply_a(buf_a_, G, s.projector, d.r, true, kk, s, false);
      phase_end(slot);
      orthonormalize(buf_a_, d.am, kk, householder);
      slot = phase_begin(Phase::products);
      apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);  // Y = Aᵀ·Z (an×r)
      phase_end(slot);
      orthonormalize(buf_b_, d.an, kk, householder);
    } else {
      // Randomized range finder (top_right_singular_randomized).
      int slot = phase_begin(Phase::products);
      splitmix_normal_f32(buf_a_, omega_state, d.am, kk, stream_);  // Ω (am×k), column-major
      apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);         // Y = AᵀΩ (an×k)
      phase_end(slot);
      orthonormalize(buf_b_, d.an, kk, householder);
      for (int it = 0; it < config_.power_iters; it++) {
        slot = phase_begin(Phase::products);
        apply_a(buf_a_, G, buf_b_, d.an, false, kk, s, false);  // Z = orth(A·B) (am×k)
        phase_end(slot);
        orthonormalize(buf_a_, d.am, kk, householder);
        slot = phase_begin(Phase::products);
        apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);  // B = orth(Aᵀ·Z) (an×k)
        phase_end(slot);
        orthonormalize(buf_b_, d.an, kk, householder);
      }
    }
    // Rayleigh-Ritz: the right singular vectors of C = A·B (am×kk) are B·V, V the eigenvectors of
    // M = CᵀC (kk×kk; syevd: ascending eigenvalues σ², eigenvectors in place). Measured on an
    // H200 at k = 256: syevd 2.0 ms whatever M; syevj 1.2 ms on a nearly diagonal M but 3.9 ms on
    // a full one; gesvd of the k×k R_c of a QR of C, as before, 13.5 ms.
    int slot = phase_begin(Phase::products);
    apply_a(buf_a_, G, buf_b_, d.an, false, kk, s, false);  // C = A·B (am×kk)
    phase_end(slot);
    slot = phase_begin(Phase::rotation);
    gemm_->gemm(true, false, kk, kk, d.am, 1.0f, buf_a_, d.am, buf_a_, d.am, 0.0f, small_a_, kk, stream_);  // M
    CUSOLVER_CHECK(cusolverDnSsyevd(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, kk, small_a_, kk, sigma_,
                                    solver_work_, solver_lwork_, info_));
    flag_failure(failure_, info_, nullptr, 0, stream_);
    phase_end(slot);
    slot = phase_begin(Phase::check);
    int failed = 0;
    CUDA_CHECK(cudaMemcpyAsync(&failed, failure_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    phase_end(slot);
    if (!failed) break;
    // Householder QR does not fail: what fails now is the eigensolver (non-finite G, say).
    OWLORE_REQUIRE(!householder, "GaLore (GPU): cuSOLVER syevd failed on the ", kk, " x ", kk,
                   " Rayleigh-Ritz matrix of a ", s.rows, " x ", s.cols, " gradient (is the gradient finite?)");
    fallbacks_++;
    last_fell_back_ = true;
  }
  // out (an×r column-major) = B·V_top = the projector rows (r×an row-major), largest first. Right:
  // that is Q; left: P = its transpose (buf_a_ is free again: an·r ≤ am·kk).
  const int slot = phase_begin(Phase::rotation);
  reverse_columns_f32(small_b_, small_a_, kk, d.r, kk, stream_);  // V_top (kk×r)
  float* out = d.right ? s.projector : buf_a_;
  gemm_->gemm(false, false, d.an, d.r, kk, 1.0f, buf_b_, d.an, small_b_, kk, 0.0f, out, d.an, stream_);
  if (!d.right) transpose_f32(s.projector, buf_a_, d.r, d.an, d.an, d.r, stream_);
  phase_end(slot);
}

double GaloreGpu::refresh(GaloreGpuMatrix& s, const float* G, Rng& rng) {
  NvtxRange range("galore_refresh");
  OWLORE_REQUIRE(workspace_ != nullptr, "GaLore (GPU): refresh before bind()");
  OWLORE_REQUIRE(s.r_numel() <= max_r_numel_ && (int64_t)s.rows * s.cols <= max_mn_,
                 "GaLore (GPU): a ", s.rows, " x ", s.cols, " matrix is larger than the workspace was sized for");
  if (config_.mode == ProjectorMode::exact) refresh_exact(s, G);
  else refresh_fast(s, G, rng);
  // The twin's sign convention (svd_cpu.h): the kept moments meet the new basis vector by vector.
  if (s.side == ProjectionSide::right) orient_singular_vectors_f32(s.projector, s.rank, s.cols, s.cols, 1, stream_);
  else orient_singular_vectors_f32(s.projector, s.rank, s.rows, 1, s.rank, stream_);
  s.has_projector = true;
  s.refreshes++;
  // Captured energy ‖R‖²/‖G‖² with the new projector (fp32 sums; the twin sums in double).
  project(R_, G, s);
  float* scratch = norms_ + 2;
  sum_squares(norms_, scratch, R_, s.r_numel(), false, stream_);
  sum_squares(norms_ + 1, scratch, G, (int64_t)s.rows * s.cols, false, stream_);
  float host[2];
  CUDA_CHECK(cudaMemcpyAsync(host, norms_, sizeof host, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  s.captured_energy = host[1] == 0.0f ? 1.0 : (double)host[0] / host[1];
  return s.captured_energy;
}

void GaloreGpu::project(float* R, const float* G, const GaloreGpuMatrix& s, bool accumulate) {
  OWLORE_REQUIRE(s.has_projector, "GaLore (GPU): project called before the first projector refresh");
  OWLORE_REQUIRE(gemm_ != nullptr, "GaLore (GPU): project called before bind()");
  galore_project(*gemm_, R, G, s.projector, s.rows, s.cols, s.rank, s.side == ProjectionSide::right, stream_,
                 accumulate);
}

void GaloreGpu::apply_projected(bf16* W, float* U, const float* R, float grad_scale, GaloreGpuMatrix& s, float lr,
                                uint32_t seed) {
  NvtxRange range("galore_apply_projected");
  OWLORE_REQUIRE(workspace_ != nullptr, "GaLore (GPU): apply before bind()");
  OWLORE_REQUIRE(s.has_projector, "GaLore (GPU): apply_projected called before the first projector refresh");
  OWLORE_REQUIRE(s.r_numel() <= max_r_numel_, "GaLore (GPU): R of ", s.rows, " x ", s.cols,
                 " is larger than the workspace was sized for");
  s.step++;
  const int t = s.step;
  galore_adam(N_, s.m, s.v, R, s.r_numel(), grad_scale, config_.beta1, config_.beta2, config_.eps, stream_);
  galore_back_project(*gemm_, U, N_, s.projector, s.rows, s.cols, s.rank, s.side == ProjectionSide::right,
                      config_.scale, stream_);
  // DESIGN.md §1 step size, computed in double as the twin does.
  const double step_size =
      (double)lr * std::sqrt(1.0 - std::pow((double)config_.beta2, t)) / (1.0 - std::pow((double)config_.beta1, t));
  galore_weight_update(W, U, (int64_t)s.rows * s.cols, lr, config_.weight_decay, (float)step_size, t, seed, stream_);
}

double GaloreGpu::step(bf16* W, float* G, GaloreGpuMatrix& s, float lr, float grad_scale, uint32_t seed, Rng& rng) {
  double energy = -1.0;
  if (refresh_due(s)) energy = refresh(s, G, rng);
  project(R_, G, s);
  apply_projected(W, G, R_, grad_scale, s, lr, seed);  // G is read by project only: it becomes U
  return energy;
}

}  // namespace owlore
