#include <cmath>
#include <vector>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
// sign = +1 rotates forward by the angle, -1 rotates back (the backward of a rotation is its
// transpose). Angles in the working precision: p * f_i with f_i rounded to Real.
template <typename Real>
void rotate(Real* out, const Real* inp, int B, int T, int n_heads, int head_dim, int row_stride,
            const double* inv_freq, int pos_offset, Real sign) {
  const int half = head_dim / 2;
  std::vector<Real> f(inv_freq, inv_freq + half);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const int64_t row = ((int64_t)b * T + t) * row_stride;
      const Real pos = (Real)(pos_offset + t);
      for (int h = 0; h < n_heads; h++) {
        const Real* x = inp + row + (int64_t)h * head_dim;
        Real* y = out + row + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
          const Real angle = pos * f[i];
          const Real c = std::cos(angle), s = sign * std::sin(angle);
          const Real x1 = x[i], x2 = x[i + half];
          y[i] = x1 * c - x2 * s;
          y[i + half] = x2 * c + x1 * s;
        }
      }
    }
}
}  // namespace

template <typename Real>
void rope_forward_ref(Real* out, const Real* inp, int B, int T, int n_heads, int head_dim, int row_stride,
                      const double* inv_freq, int pos_offset) {
  rotate(out, inp, B, T, n_heads, head_dim, row_stride, inv_freq, pos_offset, Real(1));
}

template <typename Real>
void rope_backward_ref(Real* dinp, const Real* dout, int B, int T, int n_heads, int head_dim, int row_stride,
                       const double* inv_freq, int pos_offset) {
  rotate(dinp, dout, B, T, n_heads, head_dim, row_stride, inv_freq, pos_offset, Real(-1));
}

template void rope_forward_ref<float>(float*, const float*, int, int, int, int, int, const double*, int);
template void rope_forward_ref<double>(double*, const double*, int, int, int, int, int, const double*, int);
template void rope_backward_ref<float>(float*, const float*, int, int, int, int, int, const double*, int);
template void rope_backward_ref<double>(double*, const double*, int, int, int, int, int, const double*, int);

}  // namespace owlore
