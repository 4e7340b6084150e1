#include "kernels/ref/ops_ref.h"

namespace owlore {

void matmul_forward_ref(float* out, const float* inp, const float* weight, int N, int IC, int OC) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + (int64_t)n * IC;
    for (int o = 0; o < OC; o++) {
      const float* w = weight + (int64_t)o * IC;
      float acc = 0.0f;
      for (int i = 0; i < IC; i++) acc += x[i] * w[i];
      out[(int64_t)n * OC + o] = acc;
    }
  }
}

void matmul_backward_ref(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, int N,
                         int IC, int OC) {
  if (dinp) {
    for (int n = 0; n < N; n++) {
      float* dx = dinp + (int64_t)n * IC;
      for (int i = 0; i < IC; i++) dx[i] = 0.0f;
      for (int o = 0; o < OC; o++) {
        const float g = dout[(int64_t)n * OC + o];
        const float* w = weight + (int64_t)o * IC;
        for (int i = 0; i < IC; i++) dx[i] += g * w[i];
      }
    }
  }
  if (dweight) {
    for (int n = 0; n < N; n++) {
      const float* x = inp + (int64_t)n * IC;
      for (int o = 0; o < OC; o++) {
        const float g = dout[(int64_t)n * OC + o];
        float* dw = dweight + (int64_t)o * IC;
        for (int i = 0; i < IC; i++) dw[i] += g * x[i];
      }
    }
  }
}

}  // namespace owlore
