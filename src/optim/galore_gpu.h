// GaLore-Adam on the GPU (DESIGN.md §1 "GaLore-Adam"): the mirror of optim/galore_cpu (same
// pieces — refresh, project, apply_projected — same math, same refresh rule, same Rng draws for
// the randomized projector), on fp32 device buffers with the kernels of kernels/galore.cuh, and a
// bf16 weight updated by stochastic rounding.
//
// Refresh (the projector):
//  - exact: cuSOLVER gesvd of the working matrix A (A = G on the right side, Gᵀ on the left, so
//    A is always tall: rows ≥ cols, as gesvd requires), column-major copy of A, jobu='N',
//    jobvt='S'; the top-r rows of Vᵀ are the projector. One-sided QR-based SVD of the gradient
//    itself (not of its Gram matrix, which would square the condition number).
//  - fast: the randomized range finder of svd_cpu (Halko et al. 2011) on the device, every step a
//    GEMM or a small k×k factorization (k = r + oversample cold, r warm):
//      cold: Ω (am×k) = the caller's Rng normals in the twin's order, generated on the device from
//            the Rng's state (SplitMix64 is seekable; the host Rng then skips them, so draws and
//            state match the CPU trainer); Y = AᵀΩ; power iterations Z = A·B, B = Aᵀ·Z with an
//            orthonormalization after every product.
//      warm (after the first projector; as top_right_singular_warm): one subspace iteration from
//            the previous projector X, B = orth(Aᵀ·orth(A·X)). The inner orth leaves the span
//            unchanged (the twin's B = orth(Aᵀ(A·X))) and keeps Y's conditioning at σ1/σr
//            instead of (σ1/σr)².
//    orth = shifted CholeskyQR3 (Fukaya et al. 2020): W = YᵀY (GEMM), potrf, Y ← Y·U⁻¹ (trsm),
//    three times, the first with a small diagonal shift so potrf succeeds up to cond(Y) ≈ 1e5 in
//    fp32. A failed factorization is flagged on the device and checked once per refresh; the
//    refresh then reruns with Householder QR (geqrf + orgqr) instead (fallbacks() counts them).
//    Rotation (Rayleigh-Ritz, the twin's small SVD of A·B): C = A·B, M = CᵀC (k×k), eigenvectors
//    V of M (syevd, ascending), projector rows = (B·V[:, top r, descending])ᵀ: B·V are the right
//    singular vectors of C. M squares C's condition number, so directions whose σ² sits below
//    ~1e-6·σ1² are resolved only roughly, which moves the captured energy by less than that.
// Every refresh ends with the twin's sign convention (orient_singular_vectors in svd_cpu.h: each
// vector's largest-magnitude entry positive), so on well-separated singular values the GPU
// projector is the twin's element by element, not only its span, and the moments, kept across a
// refresh, meet the same basis on both. At repeated singular values the basis is still defined
// only up to a rotation within them.
//
// Memory: the state of one matrix (projector, moments) lives in caller memory (the backend's
// slots); GaloreGpu owns the handles and one workspace sized at construction for the largest
// matrix at the configured rank and mode, so no step allocates.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "base/rng.h"
#include "optim/galore_cpu.h"

namespace owlore {

class GemmF32;

// One matrix's GaLore state on the device. The pointers are views into caller memory of
// galore_gpu_state_floats(rows, cols, config) floats (projector, then m, then v).
struct GaloreGpuMatrix {
  int rows = 0, cols = 0;  // m, n of the weight
  int rank = 0;            // r after clamping
  ProjectionSide side = ProjectionSide::right;
  float* projector = nullptr;  // right: Q (rank, cols); left: P (rows, rank)
  float* m = nullptr;          // Adam moments, R's shape
  float* v = nullptr;
  bool has_projector = false;
  int step = 0;  // the matrix's own completed steps
  int refreshes = 0;
  double captured_energy = 0.0;  // ‖R‖²/‖G‖² at the last refresh

  int r_rows() const { return side == ProjectionSide::right ? rows : rank; }
  int r_cols() const { return side == ProjectionSide::right ? rank : cols; }
  int64_t r_numel() const { return (int64_t)r_rows() * r_cols(); }
  int64_t projector_numel() const { return (int64_t)rank * (side == ProjectionSide::right ? cols : rows); }
};

// Floats of device memory the state of one rows×cols matrix needs (projector + m + v).
int64_t galore_gpu_state_floats(int rows, int cols, const GaloreConfig& config);
// Floats of one R (the projected gradient, r_numel) of a rows×cols matrix, 256-byte aligned.
int64_t galore_gpu_r_floats(int rows, int cols, const GaloreConfig& config);

// A state over memory (galore_gpu_state_floats floats): side chosen, rank clamped, no
// projector, step 0. Does not touch the memory: zero the moments with galore_gpu_reset.
GaloreGpuMatrix galore_gpu_matrix(int rows, int cols, const GaloreConfig& config, float* memory);

// Fresh state on the same memory: moments zeroed (async on stream), no projector, step 0.
void galore_gpu_reset(GaloreGpuMatrix& state, cudaStream_t stream);

class GaloreGpu {
 public:
  // shapes: every (rows, cols) this optimizer will step; the workspace is sized for the largest.
  // The workspace is device memory of workspace_bytes(), given with bind() (the backend takes it
  // from its memory plan) before the first refresh; bind(nullptr) allocates it here. gemm_workspace:
  // the cuBLASLt workspace of the GEMMs ordered on the same stream (the model's), or null (its own).
  GaloreGpu(const GaloreConfig& config, const std::vector<std::pair<int, int>>& shapes, cudaStream_t stream);
  ~GaloreGpu();
  GaloreGpu(const GaloreGpu&) = delete;
  GaloreGpu& operator=(const GaloreGpu&) = delete;

  size_t workspace_bytes() const { return workspace_bytes_; }
  void bind(void* workspace, void* gemm_workspace = nullptr);
  const GaloreConfig& config() const { return config_; }

  bool refresh_due(const GaloreGpuMatrix& state) const;
  // A new projector from G (fp32, device) by config.mode; records and returns the captured
  // energy ‖R‖²/‖G‖² (synchronizes the stream for it). Moments untouched. Fast mode draws Ω from
  // rng on cold starts, exactly as galore_refresh does.
  double refresh(GaloreGpuMatrix& state, const float* G /*(m,n)*/, Rng& rng);
  // R = G·Qᵀ (right) or Pᵀ·G (left). Overwrites R, or with accumulate adds to it.
  void project(float* R /*(r_rows,r_cols)*/, const float* G /*(m,n)*/, const GaloreGpuMatrix& state,
               bool accumulate = false);
  // Adam on grad_scale·R, U = α·N·Q | α·P·N into U (fp32 scratch of m·n floats; may alias the
  // gradient, which is not read here), then the bf16 weight update with stochastic rounding
  // keyed by (seed, state.step). Advances state.step. R is not modified.
  void apply_projected(__nv_bfloat16* W /*(m,n)*/, float* U /*(m,n) scratch*/, const float* R /*(r_rows,r_cols)*/,
                       float grad_scale, GaloreGpuMatrix& state, float lr, uint32_t seed);
  // One whole step: refresh if due, project, apply. G is overwritten (it serves as U). Returns the
  // captured energy of the refresh, or -1 when the step did not refresh.
  double step(__nv_bfloat16* W /*(m,n)*/, float* G /*(m,n), clobbered*/, GaloreGpuMatrix& state, float lr, float grad_scale,
              uint32_t seed, Rng& rng);

  cudaStream_t stream() const { return stream_; }

  // Fast refreshes that fell back to Householder QR (a Cholesky factorization failed: G or its
  // sketch too ill-conditioned for shifted CholeskyQR in fp32, e.g. G = 0).
  int fallbacks() const { return fallbacks_; }

  // Diagnostics for tools/bench/bench_refresh: with profile_phases(true) the fast refresh records CUDA
  // events around its pieces; refresh_phases() sums the last fast refresh's by kind (synchronizes).
  struct RefreshPhases {
    float products_ms = 0;        // GEMMs with G (A·X, Aᵀ·Z), Ω
    float orthonormalize_ms = 0;  // CholeskyQR (or the Householder fallback)
    float rotation_ms = 0;        // M = CᵀC, eigensolver, the final B·V (C = A·B counts as a product)
    float check_ms = 0;           // the one host round trip that reads the failure flag
    bool fell_back = false;
  };
  void profile_phases(bool on);
  RefreshPhases refresh_phases() const;

 private:
  void refresh_exact(GaloreGpuMatrix& s, const float* G);
  void refresh_fast(GaloreGpuMatrix& s, const float* G, Rng& rng);
  // Column-major out (rows×k) = A·X (a_times) or Aᵀ·X, A the working matrix of G (see .cu).
  void apply_a(float* out, const float* G, const float* X, int ldx, bool trans_x, int k, const GaloreGpuMatrix& s,
               bool transpose_a);
  // Orthonormal basis of the columns of Y (rows×k, column-major, in place): shifted CholeskyQR3,
  // failures flagged in failure_; or (householder) geqrf + orgqr.
  void orthonormalize(float* Y, int rows, int k, bool householder);
  void check_info(const char* what);
  enum class Phase { products, orthonormalize, rotation, check };
  int phase_begin(Phase phase);  // slot for phase_end, -1 when not profiling
  void phase_end(int slot);

  GaloreConfig config_;
  cudaStream_t stream_;
  cusolverDnHandle_t solver_ = nullptr;
  cublasHandle_t blas_ = nullptr;  // fast mode: trsm of CholeskyQR
  std::unique_ptr<GemmF32> gemm_;
  // workspace layout (floats unless noted), sizes for the largest shape
  int64_t max_r_numel_ = 0, max_mn_ = 0, buf_a_floats_ = 0, buf_b_floats_ = 0, small_floats_ = 0;
  int max_k_ = 0, solver_lwork_ = 0;
  size_t workspace_bytes_ = 0;
  void* workspace_ = nullptr;
  bool owns_workspace_ = false;
  float* R_ = nullptr;        // projected gradient (max_r_numel)
  float* N_ = nullptr;        // Adam direction (max_r_numel)
  float* buf_a_ = nullptr;    // exact: column-major A (m·n); fast: am×k
  float* buf_b_ = nullptr;    // exact: Vᵀ (an×an); fast: an×k
  float* small_a_ = nullptr;  // fast: the Gram YᵀY and its Cholesky factor; then M = CᵀC and its eigenvectors (k×k)
  float* small_b_ = nullptr;  // fast: the top-r eigenvectors, descending (k×r)
  float* sigma_ = nullptr;    // singular values (exact), eigenvalues of M (fast)
  float* tau_ = nullptr;      // Householder scalars / gesvd rwork
  float* solver_work_ = nullptr;
  float* norms_ = nullptr;    // [0]: ‖R‖², [1]: ‖G‖², then sum_squares scratch
  int* info_ = nullptr;       // [0]: cuSOLVER info, [1]: fast refresh failure flag
  int* failure_ = nullptr;
  int fallbacks_ = 0;
  // profile_phases: event pairs of the last fast refresh and each pair's kind
  std::vector<cudaEvent_t> phase_events_;
  std::vector<Phase> phase_kinds_;
  int phase_count_ = 0;
  bool last_fell_back_ = false;
};

}  // namespace owlore
