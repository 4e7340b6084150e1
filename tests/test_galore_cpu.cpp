// GaLore-Adam CPU twin (DESIGN.md §1): each step equals the DESIGN formula transcribed here in
// double; the projector spans the top-r singular subspace; clipping commutes with projection;
// R accumulates over micro-batches; the fast projector captures the exact projector's energy and
// its warm start beats a cold start on a slowly changing gradient; every projector path follows
// the sign convention (svd_cpu.h), so a matrix whose projected-side columns are permuted or
// negated, or the negated matrix, gets the correspondingly permuted and negated basis, oriented.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <cmath>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "optim/galore_cpu.h"
#include "optim/svd_cpu.h"
#include "test_util.h"

namespace owlore {
namespace {

using test::rel_error;
using MatrixD = Eigen::MatrixXd;
using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

MatrixD to_eigen(const float* A, int m, int n) { return Eigen::Map<const RowMajorF>(A, m, n).cast<double>(); }
std::vector<float> from_eigen(const MatrixD& A) {
  std::vector<float> out(A.size());
  Eigen::Map<RowMajorF>(out.data(), A.rows(), A.cols()) = A.cast<float>();
  return out;
}

// The orthogonal projector onto the span of the state's projector, in the n-space (right) or the
// m-space (left): sign- and rotation-invariant, so it can be compared with an independent SVD.
MatrixD subspace_projector(const GaloreState& s) {
  if (s.side == ProjectionSide::right) {
    const MatrixD Q = to_eigen(s.projector.data(), s.rank, s.cols);
    return Q.transpose() * Q;
  }
  const MatrixD P = to_eigen(s.projector.data(), s.rows, s.rank);
  return P * P.transpose();
}

// The same from Eigen's one-sided Jacobi SVD (a different algorithm from the runtime's BDCSVD).
MatrixD reference_subspace(const float* G, int m, int n, int r, ProjectionSide side) {
  Eigen::JacobiSVD<MatrixD> svd(to_eigen(G, m, n), Eigen::ComputeThinU | Eigen::ComputeThinV);
  const MatrixD basis = side == ProjectionSide::right ? MatrixD(svd.matrixV().leftCols(r)) : MatrixD(svd.matrixU().leftCols(r));
  return basis * basis.transpose();
}

// DESIGN.md §1 written out independently, in double, given the projector the step used.
struct Transcribed {
  MatrixD m, v;
  int t = 0;
  // Returns W after the step.
  MatrixD step(const MatrixD& W, const MatrixD& G, const GaloreState& s, const GaloreConfig& c, double lr,
               double grad_scale) {
    const bool right = s.side == ProjectionSide::right;
    MatrixD R;
    MatrixD Q, P;
    if (right) Q = to_eigen(s.projector.data(), s.rank, s.cols), R = G * Q.transpose();
    else P = to_eigen(s.projector.data(), s.rows, s.rank), R = P.transpose() * G;
    R *= grad_scale;
    if (m.size() == 0) m = MatrixD::Zero(R.rows(), R.cols()), v = MatrixD::Zero(R.rows(), R.cols());
    t++;
    m = c.beta1 * m + (1 - c.beta1) * R;
    v = c.beta2 * v + (1 - c.beta2) * R.cwiseProduct(R);
    const MatrixD N = m.array() / (v.array().sqrt() + c.eps);
    const double step_size = lr * std::sqrt(1 - std::pow((double)c.beta2, t)) / (1 - std::pow((double)c.beta1, t));
    const MatrixD U = c.scale * (right ? MatrixD(N * Q) : MatrixD(P * N));
    return W - lr * c.weight_decay * W - step_size * U;
  }
};

struct Case {
  int m, n, rank;
};

// Several steps in a row with refreshes at t = 1, 4, 7 (T = 3) — refresh and non-refresh steps,
// kept moments across refreshes, weight decay, a clip factor, α ≠ 1.
void check_steps_against_transcription(Case shape, ProjectorMode mode) {
  GaloreConfig c;
  c.rank = shape.rank, c.proj_gap = 3, c.scale = 0.25f, c.weight_decay = 0.1f, c.mode = mode;
  GaloreState s = galore_state(shape.m, shape.n, c);
  const int r = std::min({shape.rank, shape.m, shape.n});
  ASSERT_EQ(s.rank, r);
  ASSERT_EQ(s.side, shape.m >= shape.n ? ProjectionSide::right : ProjectionSide::left);
  std::vector<float> W = test::random_vector((int64_t)shape.m * shape.n, 1, 0.02f);
  Transcribed ref;
  Rng rng(17);
  // lr 1e-2 keeps the update ~1e3 float ulps of W (|W| ~ 0.02), so storing W in fp32 costs
  // ~1e-6 of the update and the comparison measures the formula, not W's rounding (at lr 1e-3
  // that rounding alone is ~1e-5 of the update).
  const float lr = 1e-2f, grad_scale = 0.7f;
  for (int t = 1; t <= 8; t++) {
    const std::vector<float> G = test::random_vector((int64_t)shape.m * shape.n, 100 + t);
    const bool refresh = (t - 1) % 3 == 0;
    EXPECT_EQ(galore_refresh_due(s, c), refresh) << "t " << t;
    const MatrixD W_before = to_eigen(W.data(), shape.m, shape.n);
    galore_adam_step(W.data(), G.data(), shape.m, shape.n, s, c, lr, grad_scale, rng);
    EXPECT_EQ(s.step, t);
    EXPECT_EQ(s.refreshes, (t + 2) / 3);
    if (refresh && mode == ProjectorMode::exact && r < std::min(shape.m, shape.n)) {
      const double err = (subspace_projector(s) - reference_subspace(G.data(), shape.m, shape.n, r, s.side)).norm();
      EXPECT_LE(err, 1e-4) << "projector subspace differs from the top-" << r << " singular subspace at t " << t;
    }
    if (refresh) {  // orthonormal columns (P) / rows (Q)
      const MatrixD B = s.side == ProjectionSide::right ? MatrixD(to_eigen(s.projector.data(), r, shape.n).transpose())
                                                        : to_eigen(s.projector.data(), shape.m, r);
      EXPECT_LE((B.transpose() * B - MatrixD::Identity(r, r)).norm(), 1e-5);
    }
    const MatrixD expected = ref.step(W_before, to_eigen(G.data(), shape.m, shape.n), s, c, lr, grad_scale);
    const MatrixD got = to_eigen(W.data(), shape.m, shape.n);
    const double update_err = (got - expected).norm() / (expected - W_before).norm();
    EXPECT_LE(update_err, 1e-5) << shape.m << "x" << shape.n << " r " << r << " t " << t << ": relative error of the update";
    const std::vector<float> m_ref = from_eigen(ref.m), v_ref = from_eigen(ref.v);
    EXPECT_LE(rel_error(s.m, m_ref), 1e-5) << "first moment at t " << t;
    EXPECT_LE(rel_error(s.v, v_ref), 1e-5) << "second moment at t " << t;
  }
}

TEST(GaloreCpu, RightProjectionMatchesDesignFormula) { check_steps_against_transcription({37, 23, 6}, ProjectorMode::exact); }
TEST(GaloreCpu, LeftProjectionMatchesDesignFormula) { check_steps_against_transcription({19, 41, 5}, ProjectorMode::exact); }
TEST(GaloreCpu, RankClampedToSmallerSide) { check_steps_against_transcription({17, 9, 64}, ProjectorMode::exact); }
TEST(GaloreCpu, FastModeStepsMatchDesignFormula) {
  check_steps_against_transcription({29, 31, 4}, ProjectorMode::fast);
  check_steps_against_transcription({33, 13, 4}, ProjectorMode::fast);
}

TEST(GaloreCpu, ClipThenProjectEqualsProjectThenScale) {
  for (Case shape : {Case{31, 12, 5}, Case{12, 31, 5}}) {
    GaloreConfig c;
    c.rank = shape.rank, c.proj_gap = 2, c.weight_decay = 0.01f;
    GaloreState a = galore_state(shape.m, shape.n, c), b = a;
    std::vector<float> Wa = test::random_vector((int64_t)shape.m * shape.n, 2, 0.02f), Wb = Wa;
    Rng rng_a(1), rng_b(1);
    for (int t = 1; t <= 5; t++) {
      const std::vector<float> G = test::random_vector((int64_t)shape.m * shape.n, 50 + t, 3.0f);
      const float clip = 0.3f + 0.1f * t;
      std::vector<float> clipped(G);
      for (float& x : clipped) x *= clip;
      galore_adam_step(Wa.data(), clipped.data(), shape.m, shape.n, a, c, 1e-3f, 1.0f, rng_a);  // clip G, then project
      galore_adam_step(Wb.data(), G.data(), shape.m, shape.n, b, c, 1e-3f, clip, rng_b);        // project G, scale R
      EXPECT_LE(rel_error(Wa, Wb), 1e-6) << "t " << t;
      EXPECT_LE(rel_error(a.m, b.m), 1e-5) << "t " << t;
      EXPECT_LE(rel_error(a.v, b.v), 1e-5) << "t " << t;
    }
  }
}

TEST(GaloreCpu, AccumulatingRAcrossMicroBatchesEqualsProjectingTheSum) {
  for (Case shape : {Case{40, 18, 6}, Case{18, 40, 6}}) {
    GaloreConfig c;
    c.rank = shape.rank;
    const int64_t numel = (int64_t)shape.m * shape.n;
    std::vector<std::vector<float>> micro;
    std::vector<float> sum(numel, 0.0f);
    for (int k = 0; k < 4; k++) {
      micro.push_back(test::random_vector(numel, 200 + k));
      for (int64_t e = 0; e < numel; e++) sum[e] += micro[k][e];
    }
    // The trainer's refresh-step order: factorize a gradient, then project each micro-batch.
    GaloreState a = galore_state(shape.m, shape.n, c);
    Rng rng(3);
    galore_refresh(a, sum.data(), c, rng);
    GaloreState b = a;
    std::vector<float> R_acc(a.r_numel(), 0.0f), R(a.r_numel());
    for (const auto& G : micro) {
      galore_project(R.data(), G.data(), a);
      for (int64_t e = 0; e < a.r_numel(); e++) R_acc[e] += R[e];
    }
    std::vector<float> R_sum(b.r_numel());
    galore_project(R_sum.data(), sum.data(), b);
    EXPECT_LE(rel_error(R_acc, R_sum), 1e-6);
    std::vector<float> Wa = test::random_vector(numel, 4, 0.02f), Wb = Wa;
    galore_apply_projected(Wa.data(), R_acc.data(), 0.25f, a, c, 1e-3f);  // mean over 4 micro-batches
    galore_apply_projected(Wb.data(), R_sum.data(), 0.25f, b, c, 1e-3f);
    EXPECT_LE(rel_error(Wa, Wb), 1e-6);
    EXPECT_LE(rel_error(a.m, b.m), 1e-5);
  }
}

// G = Σ_{k<16} σ_k u_k v_kᵀ + noise with σ_k = 10 · q^k and i.i.d. N(0, noise²) entries (noise
// singular values ≈ noise·(sqrt(m) + sqrt(n)) ≈ 0.3 per 0.01 of noise at 300×200).
std::vector<float> low_rank_plus_noise(int m, int n, double q, double noise, uint64_t seed) {
  Rng rng(seed);
  MatrixD U(m, 16), V(n, 16);
  for (int i = 0; i < U.size(); i++) U.data()[i] = rng.normal();
  for (int i = 0; i < V.size(); i++) V.data()[i] = rng.normal();
  U = Eigen::HouseholderQR<MatrixD>(U).householderQ() * MatrixD::Identity(m, 16);
  V = Eigen::HouseholderQR<MatrixD>(V).householderQ() * MatrixD::Identity(n, 16);
  Eigen::VectorXd sigma(16);
  for (int k = 0; k < 16; k++) sigma[k] = 10.0 * std::pow(q, k);
  MatrixD G = U * sigma.asDiagonal() * V.transpose();
  for (int i = 0; i < G.size(); i++) G.data()[i] += noise * rng.normal();
  return from_eigen(G);
}

// Energy ratio fast/exact of one refresh on G.
double fast_over_exact(const std::vector<float>& G, Case shape, int power_iters, const char* label) {
  GaloreConfig exact, fast;
  exact.rank = fast.rank = shape.rank;
  fast.mode = ProjectorMode::fast;  // oversample 8
  fast.power_iters = power_iters;
  GaloreState se = galore_state(shape.m, shape.n, exact), sf = galore_state(shape.m, shape.n, fast);
  Rng rng(11);
  galore_refresh(se, G.data(), exact, rng);
  galore_refresh(sf, G.data(), fast, rng);
  std::printf("%s %dx%d r=%d, %d power iteration(s): captured energy exact %.5f, fast %.5f (ratio %.5f)\n", label,
              shape.m, shape.n, shape.rank, power_iters, se.captured_energy, sf.captured_energy,
              sf.captured_energy / se.captured_energy);
  EXPECT_LE(sf.captured_energy, se.captured_energy * (1 + 1e-6)) << "nothing beats the exact top-r subspace";
  return sf.captured_energy / se.captured_energy;
}

TEST(GaloreCpu, FastProjectorCapturesExactEnergy) {
  // Signal σ_k = 10 · 0.858^k, 10 down to 1.0, over noise 0.01 (noise singular values ≈ 0.3):
  // one power iteration is enough, at the signal's rank and inside it (r = 8 cuts between
  // σ_7 = 3.4 and σ_8 = 2.9, a gap of only 1.17x).
  for (Case shape : {Case{300, 200, 16}, Case{200, 300, 16}, Case{300, 200, 8}}) {
    const std::vector<float> G = low_rank_plus_noise(shape.m, shape.n, 0.858, 0.01, 7);
    EXPECT_GE(fast_over_exact(G, shape, 1, "signal over noise:"), 0.99);
  }
  // Harder: σ_k = 10 · 0.85^k (down to 0.87) under noise 0.05 (noise singular values ≈ 1.6), so
  // the top-16 subspace mixes the signal's tail with noise directions: one power iteration gets
  // 0.989 of the exact energy, two get over 0.99.
  const std::vector<float> G = low_rank_plus_noise(300, 200, 0.85, 0.05, 7);
  EXPECT_GE(fast_over_exact(G, {300, 200, 16}, 1, "noisy tail:"), 0.98);
  EXPECT_GE(fast_over_exact(G, {300, 200, 16}, 2, "noisy tail:"), 0.99);
}

TEST(GaloreCpu, WarmStartBeatsColdOnSlowlyChangingGradient) {
  // A flat-ish spectrum, σ_k = (k+1)^(-1/2), where one power iteration from noise falls short,
  // changing slowly: G_{i+1} = G_i + 0.02·‖G_i‖/sqrt(mn)·noise. Each refresh, warm iterates once
  // from the last projector; cold draws a new range finder (oversample 8, one power iteration).
  const int m = 160, n = 120, rank = 12;
  Rng data(5);
  MatrixD U = MatrixD::Zero(m, n), V = MatrixD::Zero(n, n);
  for (int i = 0; i < U.size(); i++) U.data()[i] = data.normal();
  for (int i = 0; i < V.size(); i++) V.data()[i] = data.normal();
  U = Eigen::HouseholderQR<MatrixD>(U).householderQ() * MatrixD::Identity(m, n);
  V = Eigen::HouseholderQR<MatrixD>(V).householderQ() * MatrixD::Identity(n, n);
  Eigen::VectorXd sigma(n);
  for (int k = 0; k < n; k++) sigma[k] = 1.0 / std::sqrt(k + 1.0);
  MatrixD G = U * sigma.asDiagonal() * V.transpose();

  GaloreConfig warm_c, cold_c, exact_c;
  warm_c.rank = cold_c.rank = exact_c.rank = rank;
  warm_c.mode = cold_c.mode = ProjectorMode::fast;
  cold_c.warm_start = false;
  GaloreState warm = galore_state(m, n, warm_c), cold = galore_state(m, n, cold_c), exact = galore_state(m, n, exact_c);
  Rng rng_w(1), rng_c(1), rng_e(1);
  double warm_gap = 0.0, cold_gap = 0.0;
  const int refreshes = 12;
  for (int i = 0; i < refreshes; i++) {
    const std::vector<float> Gf = from_eigen(G);
    galore_refresh(warm, Gf.data(), warm_c, rng_w);
    galore_refresh(cold, Gf.data(), cold_c, rng_c);
    galore_refresh(exact, Gf.data(), exact_c, rng_e);
    if (i >= 4) {  // after warm-up: warm has had a few refreshes to converge
      warm_gap += exact.captured_energy - warm.captured_energy;
      cold_gap += exact.captured_energy - cold.captured_energy;
    }
    if (i == 0 || i == refreshes - 1)
      std::printf("refresh %2d: energy exact %.5f, warm %.5f, cold %.5f\n", i, exact.captured_energy,
                  warm.captured_energy, cold.captured_energy);
    const double step = 0.02 * G.norm() / std::sqrt((double)m * n);
    for (int e = 0; e < G.size(); e++) G.data()[e] += step * data.normal();
  }
  std::printf("mean energy shortfall vs exact over refreshes 4..%d: warm %.5f, cold %.5f\n", refreshes - 1,
              warm_gap / (refreshes - 4), cold_gap / (refreshes - 4));
  EXPECT_LT(warm_gap, 0.5 * cold_gap);
}

TEST(GaloreCpu, OrientSingularVectorsFollowsTheConvention) {
  // Rows: the largest |x| negative → negated; a tie of +a, −a → the lower index's sign decides; a
  // zero vector is left alone; one entry.
  std::vector<float> rows = {0.1f, -0.5f, 0.3f, /**/ 0.5f, -0.5f, 0.2f, /**/ -0.5f, 0.5f, 0.2f, /**/ 0.0f, 0.0f, 0.0f};
  orient_singular_vectors(rows.data(), 4, 3, 3, 1);
  EXPECT_EQ(rows, (std::vector<float>{-0.1f, 0.5f, -0.3f, 0.5f, -0.5f, 0.2f, 0.5f, -0.5f, -0.2f, 0.0f, 0.0f, 0.0f}));
  std::vector<float> one = {-2.0f};
  orient_singular_vectors(one.data(), 1, 1, 1, 1);
  EXPECT_EQ(one[0], 2.0f);
  // Columns of a 3×2 row-major P: (vector stride 1, element stride 2).
  std::vector<float> P = {0.2f, 0.9f, /**/ -0.7f, 0.1f, /**/ 0.3f, -0.95f};
  orient_singular_vectors(P.data(), 2, 3, 1, 2);
  EXPECT_EQ(P, (std::vector<float>{-0.2f, -0.9f, 0.7f, -0.1f, -0.3f, 0.95f}));
}

// G = U·diag(σ)·Vᵀ with σ_k = 10·q^k over all min(m, n) directions (well separated: the basis is
// defined up to sign only) and Haar-random U, V; `period` > 0 rotates U and V partway (X + 0.5·X_p
// before orthonormalization), so successive periods share the spectrum but not the vectors.
std::vector<float> separated_spectrum(int m, int n, double q, uint64_t seed, int period = 0) {
  const int L = std::min(m, n);
  Rng rng(seed), turn(seed + 1000 * (uint64_t)(period + 1));
  MatrixD U(m, L), V(n, L);
  for (int i = 0; i < U.size(); i++) U.data()[i] = rng.normal() + (period > 0 ? 0.5 * turn.normal() : 0.0);
  for (int i = 0; i < V.size(); i++) V.data()[i] = rng.normal() + (period > 0 ? 0.5 * turn.normal() : 0.0);
  U = Eigen::HouseholderQR<MatrixD>(U).householderQ() * MatrixD::Identity(m, L);
  V = Eigen::HouseholderQR<MatrixD>(V).householderQ() * MatrixD::Identity(n, L);
  Eigen::VectorXd sigma(L);
  for (int k = 0; k < L; k++) sigma[k] = 10.0 * std::pow(q, k);
  return from_eigen(U * sigma.asDiagonal() * V.transpose());
}

// The projector's r vectors as the rows of an r × side matrix: Q itself, or Pᵀ.
MatrixD projector_vectors(const GaloreState& s) {
  if (s.side == ProjectionSide::right) return to_eigen(s.projector.data(), s.rank, s.cols);
  return to_eigen(s.projector.data(), s.rows, s.rank).transpose();
}

// Every vector's largest |entry| (the first of a tie) is positive, exactly: the twin orients the
// float result, so there is no rounding between the convention and what is stored.
void expect_oriented(const GaloreState& s, const std::string& what) {
  const MatrixD vectors = projector_vectors(s);
  for (int k = 0; k < vectors.rows(); k++) {
    int largest = 0;
    for (int i = 1; i < vectors.cols(); i++)
      if (std::fabs(vectors(k, i)) > std::fabs(vectors(k, largest))) largest = i;
    EXPECT_GT(vectors(k, largest), 0.0) << what << ": vector " << k << "'s largest entry (index " << largest
                                        << ") is not positive";
  }
}

enum class Path { exact, fast_cold, fast_warm };
const char* path_name(Path p) { return p == Path::exact ? "exact" : p == Path::fast_cold ? "fast cold" : "fast warm"; }

// The projector of G by one path. fast_warm first refreshes cold on G_previous, then warm on G.
GaloreState projector_by(Path path, const std::vector<float>& G, const std::vector<float>& G_previous, int m, int n,
                         int rank) {
  GaloreConfig c;
  c.rank = rank;
  c.mode = path == Path::exact ? ProjectorMode::exact : ProjectorMode::fast;
  GaloreState s = galore_state(m, n, c);
  Rng rng(23);
  if (path == Path::fast_warm) galore_refresh(s, G_previous.data(), c, rng);
  galore_refresh(s, G.data(), c, rng);
  return s;
}

TEST(GaloreCpu, EveryProjectorPathIsOriented) {
  for (Case shape : {Case{37, 53, 4}, Case{53, 37, 4}, Case{64, 200, 6}, Case{200, 64, 6}, Case{17, 9, 64}})
    for (Path path : {Path::exact, Path::fast_cold, Path::fast_warm}) {
      // A gradient-like G (noise-dominated tail) and a changed one for the warm refresh.
      const std::vector<float> G0 = low_rank_plus_noise(shape.m, shape.n, 0.8, 0.05, 3),
                               G1 = low_rank_plus_noise(shape.m, shape.n, 0.8, 0.05, 4);
      const GaloreState s = projector_by(path, G1, G0, shape.m, shape.n, shape.rank);
      expect_oriented(s, std::to_string(shape.m) + "x" + std::to_string(shape.n) + " " + path_name(path));
    }
}

// The convention makes the basis a function of the matrix, not of how a factorization happened to
// meet it: permuting and negating the projected side's coordinates (G's columns on the right, its
// rows on the left) permutes and negates each vector's entries, and −G has G's basis. Every path
// commutes with those maps (Ω multiplies the other side), so the results agree to rounding.
TEST(GaloreCpu, PermutedAndNegatedMatricesGiveTheConventionedBasis) {
  for (Case shape : {Case{37, 53, 4}, Case{53, 37, 4}, Case{64, 200, 6}, Case{200, 64, 6}}) {
    const int m = shape.m, n = shape.n;
    const bool right = m >= n;
    const int side = right ? n : m;
    // coordinate j of the variant is sign[j] · coordinate perm[j] of G
    std::vector<int> perm(side);
    std::vector<float> sign(side);
    Rng draw(41);
    for (int j = 0; j < side; j++) perm[j] = j, sign[j] = draw.below(2) ? -1.0f : 1.0f;
    for (int j = side - 1; j > 0; j--) std::swap(perm[j], perm[draw.below(j + 1)]);
    auto permuted = [&](const std::vector<float>& G) {
      std::vector<float> out(G.size());
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
          out[(size_t)i * n + j] = right ? sign[j] * G[(size_t)i * n + perm[j]] : sign[i] * G[(size_t)perm[i] * n + j];
      return out;
    };
    auto negated = [](std::vector<float> G) {
      for (float& x : G) x = -x;
      return G;
    };
    const std::vector<float> G0 = separated_spectrum(m, n, 0.7, 5 + m), G1 = separated_spectrum(m, n, 0.7, 5 + m, 1);
    for (Path path : {Path::exact, Path::fast_cold, Path::fast_warm}) {
      const GaloreState base = projector_by(path, G1, G0, m, n, shape.rank);
      // The expected basis: base's vectors with the coordinates mapped, then oriented.
      const MatrixD vectors = projector_vectors(base);
      std::vector<float> expected((size_t)shape.rank * side);
      for (int k = 0; k < shape.rank; k++)
        for (int j = 0; j < side; j++) expected[(size_t)k * side + j] = sign[j] * (float)vectors(k, perm[j]);
      orient_singular_vectors(expected.data(), shape.rank, side, side, 1);
      const MatrixD want = to_eigen(expected.data(), shape.rank, side);
      for (const bool permute : {true, false}) {
        const GaloreState variant = permute ? projector_by(path, permuted(G1), permuted(G0), m, n, shape.rank)
                                            : projector_by(path, negated(G1), negated(G0), m, n, shape.rank);
        const MatrixD got = projector_vectors(variant);
        const double err = (got - (permute ? want : vectors)).rowwise().norm().maxCoeff();
        EXPECT_LE(err, 1e-5) << m << "x" << n << " r=" << shape.rank << " " << path_name(path)
                             << (permute ? ", projected side permuted and negated" : ", G negated")
                             << ": largest vector difference from the conventioned basis " << err << " (bound 1e-5)";
      }
    }
  }
}

TEST(GaloreCpu, RejectsMismatchedShapes) {
  GaloreConfig c;
  GaloreState s = galore_state(8, 4, c);
  std::vector<float> W(32), G(32, 1.0f);
  Rng rng(0);
  EXPECT_THROW(galore_adam_step(W.data(), G.data(), 4, 8, s, c, 1e-3f, 1.0f, rng), Error);
  std::vector<float> R(s.r_numel());
  EXPECT_THROW(galore_project(R.data(), G.data(), s), Error);  // no projector yet
  c.proj_gap = 0;
  EXPECT_THROW(galore_state(8, 4, c), Error);
}

}  // namespace
}  // namespace owlore
