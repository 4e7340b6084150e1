#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void rmsnorm_forward_ref(Real* out, Real* rstd, const Real* inp, const Real* weight, int N, int C, Real eps) {
  for (int n = 0; n < N; n++) {
    const Real* x = inp + (int64_t)n * C;
    double sum_sq = 0.0;
    for (int c = 0; c < C; c++) sum_sq += (double)x[c] * x[c];
    const Real r = Real(1) / std::sqrt((Real)(sum_sq / C) + eps);
    rstd[n] = r;
    for (int c = 0; c < C; c++) out[(int64_t)n * C + c] = x[c] * r * weight[c];
  }
}

template <typename Real>
void rmsnorm_backward_ref(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                          const Real* rstd, int N, int C) {
  for (int n = 0; n < N; n++) {
    const Real* x = inp + (int64_t)n * C;
    const Real* g = dout + (int64_t)n * C;
    const Real r = rstd[n];
    double dot = 0.0;  // sum_c g*w*x
    for (int c = 0; c < C; c++) dot += (double)g[c] * weight[c] * x[c];
    const Real coef = (Real)(dot / C) * r * r * r;
    for (int c = 0; c < C; c++) {
      dinp[(int64_t)n * C + c] += r * g[c] * weight[c] - coef * x[c];
      if (dweight) dweight[c] += g[c] * x[c] * r;
    }
  }
}


template void rmsnorm_forward_ref<float>(float* out , float* rstd , const float* inp , const float* weight , int N, int C, float eps);
template void rmsnorm_forward_ref<double>(double* out , double* rstd , const double* inp , const double* weight , int N, int C, double eps);
template void rmsnorm_backward_ref<float>(float* dinp , float* dweight , const float* dout , const float* inp , const float* weight , const float* rstd , int N, int C);
template void rmsnorm_backward_ref<double>(double* dinp , double* dweight , const double* dout , const double* inp , const double* weight , const double* rstd , int N, int C);

}  // namespace owlore
