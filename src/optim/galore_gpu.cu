#include "optim/galore_gpu.h"

#include <algorithm>
#include <cmath>

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

}  // namespace

int64_t galore_gpu_state_floats(int rows, int cols, const GaloreConfig& config) {
  const int64_t r = std::min({config.rank, rows, cols});
  return align_floats(r * std::min(rows, cols)) + 2 * align_floats(r * std::max(rows, cols));
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
  CUSOLVER_CHECK(cusolverDnCreate(&solver_));
  CUSOLVER_CHECK(cusolverDnSetStream(solver_, stream_));
  gemm_ = std::make_unique<GemmF32>();
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
        for (const int rows_q : {am, an}) {
          CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(solver_, rows_q, kk, nullptr, rows_q, &w)), need(w);
          CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(solver_, rows_q, kk, kk, nullptr, rows_q, nullptr, &w)), need(w);
        }
        CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(solver_, am, kk, nullptr, am, &w)), need(w);
        CUSOLVER_CHECK(cusolverDnSgesvd_bufferSize(solver_, kk, kk, &w)), need(w);
      }
    }
  }
  solver_lwork_ = lwork;
  const int64_t floats = 2 * align_floats(max_r_numel_) + align_floats(buf_a_floats_) + align_floats(buf_b_floats_) +
                         2 * align_floats(small_floats_) + 2 * align_floats(std::max<int64_t>(small_floats_, 1)) +
                         align_floats(std::max(lwork, 1)) + align_floats(2 + sum_squares_scratch_floats()) +
                         align_floats(1);  // info
  workspace_bytes_ = (size_t)floats * sizeof(float);
}

GaloreGpu::~GaloreGpu() {
  if (owns_workspace_) cudaFree(workspace_);
  if (solver_) cusolverDnDestroy(solver_);
}

void GaloreGpu::bind(void* workspace) {
  OWLORE_REQUIRE(workspace_ == nullptr, "GaLore (GPU): workspace bound twice");
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
  info_ = reinterpret_cast<int*>(take(1));
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

void GaloreGpu::orthonormalize(float* Y, int rows, int k) {
  CUSOLVER_CHECK(cusolverDnSgeqrf(solver_, rows, k, Y, rows, tau_, solver_work_, solver_lwork_, info_));
  CUSOLVER_CHECK(cusolverDnSorgqr(solver_, rows, k, k, Y, rows, tau_, solver_work_, solver_lwork_, info_));
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
  int kk;  // columns of the basis B (an×kk, column-major, in buf_b_)
  if (config_.warm_start && s.has_projector) {
    // One subspace iteration from the previous projector (top_right_singular_warm): X = previous
    // rows as columns (an×r): right Q's storage is that already; left P's storage is its transpose.
    kk = d.r;
    if (d.right) apply_a(buf_a_, G, s.projector, d.an, false, kk, s, false);  // A·X (am×r)
    else apply_a(buf_a_, G, s.projector, d.r, true, kk, s, false);
    apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);  // Aᵀ·(A·X) (an×r)
    orthonormalize(buf_b_, d.an, kk);
  } else {
    // Randomized range finder (top_right_singular_randomized): Ω (am×k) standard normal, drawn
    // row by row as the twin draws it, stored column-major.
    kk = std::min({d.r + config_.oversample, d.am, d.an});
    omega_host_.resize((size_t)d.am * kk);
    for (int i = 0; i < d.am; i++)
      for (int j = 0; j < kk; j++) omega_host_[(size_t)i + (size_t)j * d.am] = (float)rng.normal();
    CUDA_CHECK(cudaMemcpyAsync(buf_a_, omega_host_.data(), omega_host_.size() * sizeof(float), cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // omega_host_ may be refilled by the next refresh
    apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);  // Y = AᵀΩ (an×k)
    orthonormalize(buf_b_, d.an, kk);
    for (int it = 0; it < config_.power_iters; it++) {
      apply_a(buf_a_, G, buf_b_, d.an, false, kk, s, false);  // Z = orth(A·B) (am×k)
      orthonormalize(buf_a_, d.am, kk);
      apply_a(buf_b_, G, buf_a_, d.am, false, kk, s, true);  // B = orth(Aᵀ·Z) (an×k)
      orthonormalize(buf_b_, d.an, kk);
    }
  }
  // Rotate B onto A's right singular directions: A·B = Q_c R_c; the right singular vectors of A·B
  // are those of the kk×kk R_c (V), and the projector rows are (B·V[:, :r])ᵀ.
  apply_a(buf_a_, G, buf_b_, d.an, false, kk, s, false);  // C = A·B (am×kk)
  CUSOLVER_CHECK(cusolverDnSgeqrf(solver_, d.am, kk, buf_a_, d.am, tau_, solver_work_, solver_lwork_, info_));
  upper_triangle_f32(small_a_, buf_a_, kk, d.am, stream_);
  CUSOLVER_CHECK(cusolverDnSgesvd(solver_, 'N', 'A', kk, kk, small_a_, kk, sigma_, nullptr, kk, small_b_, kk,
                                  solver_work_, solver_lwork_, tau_, info_));
  check_info("gesvd (randomized projector)");
  // out (an×r column-major) = B·op_T(Vᵀ[:r, :]) = the projector rows (r×an row-major). Right: that
  // is Q; left: P = its transpose (buf_a_ is free again: an·r ≤ am·kk).
  float* out = d.right ? s.projector : buf_a_;
  gemm_->gemm(false, true, d.an, d.r, kk, 1.0f, buf_b_, d.an, small_b_, kk, 0.0f, out, d.an, stream_);
  if (!d.right) transpose_f32(s.projector, buf_a_, d.r, d.an, d.an, d.r, stream_);
}

double GaloreGpu::refresh(GaloreGpuMatrix& s, const float* G, Rng& rng) {
  NvtxRange range("galore_refresh");
  OWLORE_REQUIRE(workspace_ != nullptr, "GaLore (GPU): refresh before bind()");
  OWLORE_REQUIRE(s.r_numel() <= max_r_numel_ && (int64_t)s.rows * s.cols <= max_mn_,
                 "GaLore (GPU): a ", s.rows, " x ", s.cols, " matrix is larger than the workspace was sized for");
  if (config_.mode == ProjectorMode::exact) refresh_exact(s, G);
  else refresh_fast(s, G, rng);
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
