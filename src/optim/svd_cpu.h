// Top-r singular subspaces of a gradient on the CPU (Eigen, computed in double): the projector
// refresh of GaLore (DESIGN.md §1) and the reference its GPU twin (cuSOLVER / cuBLASLt) is
// checked against. All matrices are row-major float; the result is float.
//
// Every function returns the top-r RIGHT singular vectors of A (m×n) as the rows of an r×n
// matrix, oriented by orient_singular_vectors. GaLore's left projector P (m×r) of G is the
// transpose of the right one of Gᵀ; the caller (galore_cpu) does that transposition.
#pragma once
#include <cstdint>

#include "base/rng.h"

namespace owlore {

// The sign convention of every GaLore projector, CPU and GPU (DESIGN.md §1): each vector is
// negated where needed so that its entry of largest magnitude is positive (on a tie, the entry of
// lowest index decides; a zero vector is left alone). A singular vector is defined only up to
// sign, and LAPACK/cuSOLVER and Eigen pick opposite signs for many of them; within one projector
// the update does not care, but GaLore keeps its Adam moments across a refresh, where they meet
// the new basis vector by vector, so the CPU twin and the GPU must agree on the basis itself,
// not only on its span. It cannot settle a rotation within a repeated singular value.
// Vector k's entry i is vectors[k·vector_stride + i·element_stride]: the rows of Q (r×n) are
// (r, n, n, 1), the columns of P (m×r) are (r, m, 1, r). Negation is exact, so the twin applies it
// to the float result and the GPU kernel (kernels/galore.cuh) takes the same decisions on the same
// floats. The decision jumps where the largest entry and the largest of opposite sign are near a
// tie: two computations that differ by δ may then disagree on a vector whose gap is below δ.
void orient_singular_vectors(float* vectors, int count, int length, int64_t vector_stride, int64_t element_stride);

// Exact: the thin SVD (Eigen BDCSVD), rows of Vᵀ for the r largest singular values.
void top_right_singular_exact(float* out /*(r,n)*/, const float* A /*(m,n)*/, int m, int n, int r);

// Randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) on the row space:
// Y = Aᵀ Ω with Ω (m × k) standard normal from rng, k = min(r + oversample, m, n); then
// power_iters rounds of Y ← Aᵀ(A Y) with a QR re-orthonormalization after every product (so
// the small singular directions are not lost to rounding); B = orth(Y) (n × k); the small SVD
// of A·B = U Σ Wᵀ gives the top-r right singular vectors B·W[:, :r].
void top_right_singular_randomized(float* out /*(r,n)*/, const float* A /*(m,n)*/, int m, int n, int r,
                                   int oversample, int power_iters, Rng& rng);

// Warm start: one subspace iteration from the previous projector (r×n rows):
// B = orth(Aᵀ(A·previousᵀ)), then the small SVD of A·B rotates B onto the singular directions.
// On a slowly changing gradient, iterating from the last subspace accumulates power iterations
// over refreshes instead of restarting from noise.
void top_right_singular_warm(float* out /*(r,n)*/, const float* A /*(m,n)*/, int m, int n, int r,
                             const float* previous /*(r,n)*/);

}  // namespace owlore
