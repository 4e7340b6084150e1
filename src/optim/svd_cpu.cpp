#include "optim/svd_cpu.h"

#include <algorithm>
#include <cmath>

#include <Eigen/Dense>
#include <Eigen/SVD>

#include "base/error.h"

namespace owlore {

namespace {

using MatrixD = Eigen::MatrixXd;
using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

MatrixD load(const float* A, int m, int n) { return Eigen::Map<const RowMajorF>(A, m, n).cast<double>(); }

void store_rows(float* out, const MatrixD& columns /*(n, r): vectors as columns*/) {
  const int r = (int)columns.cols(), n = (int)columns.rows();
  Eigen::Map<RowMajorF>(out, r, n) = columns.transpose().cast<float>();
  orient_singular_vectors(out, r, n, n, 1);
}

// An orthonormal basis of the columns of Y (thin Householder QR).
MatrixD orthonormalize(const MatrixD& Y) {
  Eigen::HouseholderQR<MatrixD> qr(Y);
  return qr.householderQ() * MatrixD::Identity(Y.rows(), Y.cols());
}

// Rotates the orthonormal basis B (n×k) of an approximate row space of A onto A's right
// singular directions, keeping the r largest: the small SVD of A·B (m×k).
MatrixD rotate_to_singular(const MatrixD& A, const MatrixD& B, int r) {
  Eigen::BDCSVD<MatrixD> svd(A * B, Eigen::ComputeThinV);
  return B * svd.matrixV().leftCols(r);
}

void check_sizes(const char* what, int m, int n, int r) {
  OWLORE_REQUIRE(m >= 1 && n >= 1, what, ": expected a non-empty matrix, got ", m, " x ", n);
  OWLORE_REQUIRE(r >= 1 && r <= std::min(m, n), what, ": rank must be in [1, min(m, n) = ", std::min(m, n),
                 "], got ", r);
}

}  // namespace

void orient_singular_vectors(float* vectors, int count, int length, int64_t vector_stride, int64_t element_stride) {
  OWLORE_REQUIRE(count >= 0 && length >= 0, "orient_singular_vectors: negative count (", count, ") or length (",
                 length, ")");
  for (int k = 0; k < count; k++) {
    float* v = vectors + k * vector_stride;
    int largest = -1;
    float largest_abs = 0.0f;
    for (int i = 0; i < length; i++)  // strictly greater: the lowest index wins a tie
      if (std::fabs(v[i * element_stride]) > largest_abs) largest_abs = std::fabs(v[i * element_stride]), largest = i;
    if (largest >= 0 && v[largest * element_stride] < 0.0f)
      for (int i = 0; i < length; i++) v[i * element_stride] = -v[i * element_stride];
  }
}

void top_right_singular_exact(float* out, const float* A_in, int m, int n, int r) {
  check_sizes("exact SVD projector", m, n, r);
  Eigen::BDCSVD<MatrixD> svd(load(A_in, m, n), Eigen::ComputeThinV);
  store_rows(out, svd.matrixV().leftCols(r));
}

void top_right_singular_randomized(float* out, const float* A_in, int m, int n, int r, int oversample,
                                   int power_iters, Rng& rng) {
  check_sizes("randomized projector", m, n, r);
  OWLORE_REQUIRE(oversample >= 0 && power_iters >= 0, "randomized projector: oversample (", oversample,
                 ") and power iterations (", power_iters, ") must be >= 0");
  const MatrixD A = load(A_in, m, n);
  const int k = std::min({r + oversample, m, n});
  MatrixD omega(m, k);
  for (int i = 0; i < m; i++)  // row-major draw order, so a GPU twin can reproduce Ω from the seed
    for (int j = 0; j < k; j++) omega(i, j) = rng.normal();
  MatrixD B = orthonormalize(A.transpose() * omega);
  for (int it = 0; it < power_iters; it++) {
    const MatrixD Z = orthonormalize(A * B);
    B = orthonormalize(A.transpose() * Z);
  }
  store_rows(out, rotate_to_singular(A, B, r));
}

void top_right_singular_warm(float* out, const float* A_in, int m, int n, int r, const float* previous) {
  check_sizes("warm-started projector", m, n, r);
  const MatrixD A = load(A_in, m, n);
  const MatrixD prev = load(previous, r, n).transpose();  // (n, r)
  const MatrixD B = orthonormalize(A.transpose() * (A * prev));
  store_rows(out, rotate_to_singular(A, B, r));
}

}  // namespace owlore
