#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void matmul_forward_ref(Real* out, const Real* inp, const Real* weight, int N, int IC, int OC) {
  for (int n = 0; n < N; n++) {
    const Real* x = inp + (int64_t)n * IC;
    for (int o = 0; o < OC; o++) {
      const Real* w = weight + (int64_t)o * IC;
      Real acc = Real(0);
      for (int i = 0; i < IC; i++) acc += x[i] * w[i];
      out[(int64_t)n * OC + o] = acc;
    }
  }
}

template <typename Real>
void matmul_backward_ref(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight, int N,
                         int IC, int OC) {
  if (dinp) {
    for (int n = 0; n < N; n++) {
      Real* dx = dinp + (int64_t)n * IC;
      for (int i = 0; i < IC; i++) dx[i] = Real(0);
      for (int o = 0; o < OC; o++) {
        const Real g = dout[(int64_t)n * OC + o];
        const Real* w = weight + (int64_t)o * IC;
        for (int i = 0; i < IC; i++) dx[i] += g * w[i];
      }
    }
  }
  if (dweight) {
    for (int n = 0; n < N; n++) {
      const Real* x = inp + (int64_t)n * IC;
      for (int o = 0; o < OC; o++) {
        const Real g = dout[(int64_t)n * OC + o];
        Real* dw = dweight + (int64_t)o * IC;
        for (int i = 0; i < IC; i++) dw[i] += g * x[i];
      }
    }
  }
}


template void matmul_forward_ref<float>(float* out , const float* inp , const float* weight , int N, int IC, int OC);
template void matmul_forward_ref<double>(double* out , const double* inp , const double* weight , int N, int IC, int OC);
template void matmul_backward_ref<float>(float* dinp , float* dweight , const float* dout , const float* inp , const float* weight , int N, int IC, int OC);
template void matmul_backward_ref<double>(double* dinp , double* dweight , const double* dout , const double* inp , const double* weight , int N, int IC, int OC);

}  // namespace owlore
