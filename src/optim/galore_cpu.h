// GaLore-Adam for one m×n weight on the CPU (DESIGN.md §1; Zhao et al. 2024, Alg. 2): the twin
// the GPU optimizer is checked against and the engine of the CPU trainer for `owlore`/`galore`.
//
//   side: m ≥ n → right: Q (r×n) = top-r right singular vectors of G, R = G·Qᵀ (m×r)
//         m < n → left:  P (m×r) = top-r left singular vectors of G,  R = Pᵀ·G (r×n)
//   Adam on R (fp32 moments of R's shape), t = this matrix's own step count:
//         m ← β1 m + (1−β1) R;  v ← β2 v + (1−β2) R²;  N = m / (sqrt(v) + ε)
//         step = lr · sqrt(1−β2ᵗ) / (1−β1ᵗ)
//   back-project: U = α·N·Q (right) or α·P·N (left)
//   W ← W − lr·wd·W − step·U   (decoupled decay on the pre-update W, as torch.optim.AdamW)
//   refresh: when no projector exists or every T of the matrix's own steps, i.e. before step t
//            when (t−1) % T == 0. Moments are kept across a refresh.
//
// Following the reference (galore_torch/adamw.py + galore_projector.py): the projector is
// recomputed when `state["step"] % update_proj_gap == 0` with the step counted before its
// increment (our (t−1) % T == 0), and exp_avg / exp_avg_sq are created once and never reset on a
// refresh. Where we differ: the reference applies weight decay after the update, to the updated
// weights (`p.add_(p, alpha=-lr*wd)`); we decay the pre-update W as torch.optim.AdamW does. The
// two differ by lr²·wd·step·U, second order.
//
// The step is split into the pieces the GPU version mirrors, because the trainer needs them apart
// (DESIGN.md §2): refresh (factorize one G), project (G → R, linear: clipping scales R, and R
// accumulates across micro-batches), apply_projected (Adam on grad_scale·R, back-project, update).
#pragma once
#include <cstdint>
#include <vector>

#include "base/rng.h"

namespace owlore {

enum class ProjectionSide { right, left };
enum class ProjectorMode { exact, fast };

struct GaloreConfig {
  int rank = 256;          // r (OwLore: 256), clamped to min(m, n) per matrix
  int proj_gap = 100;      // T: projector refresh every T of the matrix's own steps
  float scale = 1.0f;      // α
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f;
  float weight_decay = 0.0f;
  ProjectorMode mode = ProjectorMode::exact;
  // fast mode: randomized range finder for the first projector (and every refresh when
  // warm_start is off); later refreshes do one subspace iteration from the previous projector.
  int oversample = 8;
  int power_iters = 1;
  bool warm_start = true;
};

struct GaloreState {
  int rows = 0, cols = 0;        // m, n of the weight
  int rank = 0;                  // r after clamping
  ProjectionSide side = ProjectionSide::right;
  std::vector<float> projector;  // right: Q (rank, cols); left: P (rows, rank); empty until the first refresh
  std::vector<float> m, v;       // Adam moments, R's shape
  int step = 0;                  // the matrix's own completed steps (t of the last update)
  int refreshes = 0;
  double captured_energy = 0.0;  // ‖R‖²/‖G‖² of the G that the last refresh factorized

  int r_rows() const { return side == ProjectionSide::right ? rows : rank; }  // R is (r_rows, r_cols)
  int r_cols() const { return side == ProjectionSide::right ? rank : cols; }
  int64_t r_numel() const { return (int64_t)r_rows() * r_cols(); }
};

// A fresh state for an m×n weight: side chosen, rank clamped, moments zeroed, no projector.
GaloreState galore_state(int rows, int cols, const GaloreConfig& config);

// Whether the next step must refresh the projector: none yet, or step % T == 0.
bool galore_refresh_due(const GaloreState& state, const GaloreConfig& config);

// The generator of a matrix's next randomized refresh, keyed by (seed, tensor, refreshes so far)
// rather than drawn from one stream: the draws do not depend on the order in which matrices
// refresh (the GPU refreshes inside the backward, top layer first; the CPU in the optimizer step),
// so both backends draw the same Ω, and a resume needs no generator state.
inline Rng refresh_rng(uint64_t seed, size_t tensor_index, int refreshes) {
  Rng mix(seed ^ 0x6A09E667F3BCC909ull ^ ((uint64_t)tensor_index << 32) ^ (uint64_t)(uint32_t)refreshes);
  return Rng(mix.next_u64());
}

// Computes a new projector from G (m×n) by config.mode, its vectors oriented by the sign
// convention of svd_cpu.h, and records its captured energy. The moments are untouched. Fast mode
// draws Ω from rng on cold starts.
void galore_refresh(GaloreState& state, const float* G /*(m,n)*/, const GaloreConfig& config, Rng& rng);

// R = G·Qᵀ (right) or Pᵀ·G (left) with the current projector. Overwrites R.
void galore_project(float* R /*(r_rows,r_cols)*/, const float* G /*(m,n)*/, const GaloreState& state);

// Adam on grad_scale·R, back-projection and the weight update; advances state.step.
// R may be a sum over micro-batches; grad_scale carries the clip factor and any averaging.
void galore_apply_projected(float* W /*(m,n)*/, const float* R /*(r_rows,r_cols)*/, float grad_scale,
                            GaloreState& state, const GaloreConfig& config, float lr);

// One whole step: refresh if due, project, apply. m, n must match the state.
void galore_adam_step(float* W /*(m,n)*/, const float* G /*(m,n)*/, int m, int n, GaloreState& state,
                      const GaloreConfig& config, float lr, float grad_scale, Rng& rng);

// ‖project(G)‖² / ‖G‖² with the current projector (1 when G = 0).
double galore_captured_energy(const float* G /*(m,n)*/, const GaloreState& state);

}  // namespace owlore
