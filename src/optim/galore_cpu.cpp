#include "optim/galore_cpu.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "optim/svd_cpu.h"

namespace owlore {

namespace {

// Gᵀ (n×m) of a row-major m×n matrix: the left side is the right side of the transpose.
std::vector<float> transpose(const float* A, int m, int n) {
  std::vector<float> t((int64_t)m * n);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) t[(int64_t)j * m + i] = A[(int64_t)i * n + j];
  return t;
}

}  // namespace

GaloreState galore_state(int rows, int cols, const GaloreConfig& c) {
  OWLORE_REQUIRE(rows >= 1 && cols >= 1, "GaLore: expected a non-empty weight, got ", rows, " x ", cols);
  OWLORE_REQUIRE(c.rank >= 1, "GaLore: rank must be >= 1, got ", c.rank);
  OWLORE_REQUIRE(c.proj_gap >= 1, "GaLore: projector refresh gap T must be >= 1, got ", c.proj_gap);
  GaloreState s;
  s.rows = rows, s.cols = cols;
  s.rank = std::min({c.rank, rows, cols});
  s.side = rows >= cols ? ProjectionSide::right : ProjectionSide::left;  // always the smaller side
  s.m.assign(s.r_numel(), 0.0f);
  s.v.assign(s.r_numel(), 0.0f);
  return s;
}

bool galore_refresh_due(const GaloreState& s, const GaloreConfig& c) {
  return s.projector.empty() || s.step % c.proj_gap == 0;
}

void galore_refresh(GaloreState& s, const float* G, const GaloreConfig& c, Rng& rng) {
  const bool right = s.side == ProjectionSide::right;
  // Work on A with A = G (right) or A = Gᵀ (left); its top right singular vectors, r×(cols of A).
  std::vector<float> transposed;
  const float* A = G;
  int am = s.rows, an = s.cols;
  if (!right) transposed = transpose(G, s.rows, s.cols), A = transposed.data(), am = s.cols, an = s.rows;

  std::vector<float> rows_out((int64_t)s.rank * an);
  if (c.mode == ProjectorMode::exact) {
    top_right_singular_exact(rows_out.data(), A, am, an, s.rank);
  } else if (c.warm_start && !s.projector.empty()) {
    // The stored projector as r×an rows: Q already is; P (m×r) is the transpose of those rows.
    const std::vector<float> previous = right ? s.projector : transpose(s.projector.data(), s.rows, s.rank);
    top_right_singular_warm(rows_out.data(), A, am, an, s.rank, previous.data());
  } else {
    top_right_singular_randomized(rows_out.data(), A, am, an, s.rank, c.oversample, c.power_iters, rng);
  }
  s.projector = right ? std::move(rows_out) : transpose(rows_out.data(), s.rank, s.rows);  // P = rowsᵀ (m×r)
  s.refreshes++;
  s.captured_energy = galore_captured_energy(G, s);
}

void galore_project(float* R, const float* G, const GaloreState& s) {
  OWLORE_REQUIRE(!s.projector.empty(), "GaLore: project called before the first projector refresh");
  const int m = s.rows, n = s.cols, r = s.rank;
  const float* proj = s.projector.data();
  if (s.side == ProjectionSide::right) {
    // R (m×r) = G (m×n) · Qᵀ, Q (r×n)
    for (int i = 0; i < m; i++)
      for (int k = 0; k < r; k++) {
        double acc = 0.0;
        for (int j = 0; j < n; j++) acc += (double)G[(int64_t)i * n + j] * proj[(int64_t)k * n + j];
        R[(int64_t)i * r + k] = (float)acc;
      }
  } else {
    // R (r×n) = Pᵀ · G, P (m×r)
    std::vector<double> acc((int64_t)r * n, 0.0);
    for (int i = 0; i < m; i++)
      for (int k = 0; k < r; k++) {
        const double p = proj[(int64_t)i * r + k];
        for (int j = 0; j < n; j++) acc[(int64_t)k * n + j] += p * G[(int64_t)i * n + j];
      }
    for (int64_t e = 0; e < (int64_t)r * n; e++) R[e] = (float)acc[e];
  }
}

void galore_apply_projected(float* W, const float* R, float grad_scale, GaloreState& s, const GaloreConfig& c,
                            float lr) {
  OWLORE_REQUIRE(!s.projector.empty(), "GaLore: apply_projected called before the first projector refresh");
  s.step++;
  const int t = s.step;
  const int m = s.rows, n = s.cols, r = s.rank;
  const int64_t rn = s.r_numel();
  std::vector<float> N(rn);
  for (int64_t e = 0; e < rn; e++) {
    const float g = grad_scale * R[e];
    s.m[e] = c.beta1 * s.m[e] + (1.0f - c.beta1) * g;
    s.v[e] = c.beta2 * s.v[e] + (1.0f - c.beta2) * g * g;
    N[e] = s.m[e] / (std::sqrt(s.v[e]) + c.eps);
  }
  const double step_size = (double)lr * std::sqrt(1.0 - std::pow((double)c.beta2, t)) / (1.0 - std::pow((double)c.beta1, t));
  const double decay = (double)lr * c.weight_decay;
  const float* proj = s.projector.data();
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double u = 0.0;
      if (s.side == ProjectionSide::right)  // U = α · N (m×r) · Q (r×n)
        for (int k = 0; k < r; k++) u += (double)N[(int64_t)i * r + k] * proj[(int64_t)k * n + j];
      else  // U = α · P (m×r) · N (r×n)
        for (int k = 0; k < r; k++) u += (double)proj[(int64_t)i * r + k] * N[(int64_t)k * n + j];
      float& w = W[(int64_t)i * n + j];
      w = (float)((double)w - decay * w - step_size * c.scale * u);
    }
}

void galore_adam_step(float* W, const float* G, int m, int n, GaloreState& s, const GaloreConfig& c, float lr,
                      float grad_scale, Rng& rng) {
  OWLORE_REQUIRE(m == s.rows && n == s.cols, "GaLore: state is for a ", s.rows, " x ", s.cols, " weight, got ", m,
                 " x ", n);
  if (galore_refresh_due(s, c)) galore_refresh(s, G, c, rng);
  std::vector<float> R(s.r_numel());
  galore_project(R.data(), G, s);
  galore_apply_projected(W, R.data(), grad_scale, s, c, lr);
}

double galore_captured_energy(const float* G, const GaloreState& s) {
  std::vector<float> R(s.r_numel());
  galore_project(R.data(), G, s);
  double r2 = 0.0, g2 = 0.0;
  for (float x : R) r2 += (double)x * x;
  for (int64_t e = 0; e < (int64_t)s.rows * s.cols; e++) g2 += (double)G[e] * G[e];
  return g2 == 0.0 ? 1.0 : r2 / g2;
}

}  // namespace owlore
