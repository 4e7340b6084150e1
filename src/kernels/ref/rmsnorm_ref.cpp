#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

void rmsnorm_forward_ref(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + (int64_t)n * C;
    double sum_sq = 0.0;
    for (int c = 0; c < C; c++) sum_sq += (double)x[c] * x[c];
    const float r = 1.0f / std::sqrt((float)(sum_sq / C) + eps);
    rstd[n] = r;
    for (int c = 0; c < C; c++) out[(int64_t)n * C + c] = x[c] * r * weight[c];
  }
}

void rmsnorm_backward_ref(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          const float* rstd, int N, int C) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + (int64_t)n * C;
    const float* g = dout + (int64_t)n * C;
    const float r = rstd[n];
    double dot = 0.0;  // sum_c g*w*x
    for (int c = 0; c < C; c++) dot += (double)g[c] * weight[c] * x[c];
    const float coef = (float)(dot / C) * r * r * r;
    for (int c = 0; c < C; c++) {
      dinp[(int64_t)n * C + c] = r * g[c] * weight[c] - coef * x[c];
      if (dweight) dweight[c] += g[c] * x[c] * r;
    }
  }
}

}  // namespace owlore
