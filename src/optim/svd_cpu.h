// Top-r singular subspaces of a gradient on the CPU (Eigen, computed in double): the projector
// refresh of GaLore (DESIGN.md §1) and the reference its GPU twin (cuSOLVER / cuBLASLt) is
// checked against. All matrices are row-major float; the result is float.
//
// Every function returns the top-r RIGHT singular vectors of A (m×n) as the rows of an r×n
// matrix. GaLore's left projector P (m×r) of G is the transpose of the right one of Gᵀ; the
// caller (galore_cpu) does that transposition.
#pragma once
#include <cstdint>

#include "base/rng.h"

namespace owlore {

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
