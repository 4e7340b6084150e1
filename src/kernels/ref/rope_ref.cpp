#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
// sign = +1 rotates forward by the angle, -1 rotates back (the backward of a rotation is its
// transpose). Angles in the working precision as Hugging Face computes them (float32 in HF): inv_freq = 1/theta^(2i/d), p*inv_freq.
template <typename Real>
void rotate(Real* out, const Real* inp, int B, int T, int n_heads, int head_dim, int row_stride, Real theta,
            int pos_offset, Real sign) {
  const int half = head_dim / 2;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const int64_t row = ((int64_t)b * T + t) * row_stride;
      const Real pos = (Real)(pos_offset + t);
      for (int h = 0; h < n_heads; h++) {
        const Real* x = inp + row + (int64_t)h * head_dim;
        Real* y = out + row + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
          const Real inv_freq = Real(1) / std::pow(theta, (Real)(2 * i) / (Real)head_dim);
          const Real angle = pos * inv_freq;
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
                      Real theta, int pos_offset) {
  rotate(out, inp, B, T, n_heads, head_dim, row_stride, theta, pos_offset, Real(1));
}

template <typename Real>
void rope_backward_ref(Real* dinp, const Real* dout, int B, int T, int n_heads, int head_dim, int row_stride,
                       Real theta, int pos_offset) {
  rotate(dinp, dout, B, T, n_heads, head_dim, row_stride, theta, pos_offset, Real(-1));
}


template void rope_forward_ref<float>(float* out , const float* inp , int B, int T, int n_heads, int head_dim, int row_stride, float theta, int pos_offset);
template void rope_forward_ref<double>(double* out , const double* inp , int B, int T, int n_heads, int head_dim, int row_stride, double theta, int pos_offset);
template void rope_backward_ref<float>(float* dinp , const float* dout , int B, int T, int n_heads, int head_dim, int row_stride, float theta, int pos_offset);
template void rope_backward_ref<double>(double* dinp , const double* dout , int B, int T, int n_heads, int head_dim, int row_stride, double theta, int pos_offset);

}  // namespace owlore
