#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
// sign = +1 rotates forward by the angle, -1 rotates back (the backward of a rotation is its
// transpose). Angles in float as Hugging Face computes them: inv_freq = 1/theta^(2i/d), p*inv_freq.
void rotate(float* out, const float* inp, int B, int T, int n_heads, int head_dim, int row_stride, float theta,
            int pos_offset, float sign) {
  const int half = head_dim / 2;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const int64_t row = ((int64_t)b * T + t) * row_stride;
      const float pos = (float)(pos_offset + t);
      for (int h = 0; h < n_heads; h++) {
        const float* x = inp + row + (int64_t)h * head_dim;
        float* y = out + row + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
          const float inv_freq = 1.0f / std::pow(theta, (float)(2 * i) / (float)head_dim);
          const float angle = pos * inv_freq;
          const float c = std::cos(angle), s = sign * std::sin(angle);
          const float x1 = x[i], x2 = x[i + half];
          y[i] = x1 * c - x2 * s;
          y[i + half] = x2 * c + x1 * s;
        }
      }
    }
}
}  // namespace

void rope_forward_ref(float* out, const float* inp, int B, int T, int n_heads, int head_dim, int row_stride,
                      float theta, int pos_offset) {
  rotate(out, inp, B, T, n_heads, head_dim, row_stride, theta, pos_offset, 1.0f);
}

void rope_backward_ref(float* dinp, const float* dout, int B, int T, int n_heads, int head_dim, int row_stride,
                       float theta, int pos_offset) {
  rotate(dinp, dout, B, T, n_heads, head_dim, row_stride, theta, pos_offset, -1.0f);
}

}  // namespace owlore
