#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void encoder_forward_ref(Real* out, const int* tokens, const Real* wte, int N, int C, int V) {
  for (int n = 0; n < N; n++) {
    const int t = tokens[n];
    (void)V;
    for (int c = 0; c < C; c++) out[(int64_t)n * C + c] = wte[(int64_t)t * C + c];
  }
}

template <typename Real>
void encoder_backward_ref(Real* dwte, const Real* dout, const int* tokens, int N, int C, int V) {
  (void)V;
  for (int n = 0; n < N; n++) {
    const int t = tokens[n];
    for (int c = 0; c < C; c++) dwte[(int64_t)t * C + c] += dout[(int64_t)n * C + c];
  }
}


template void encoder_forward_ref<float>(float* out , const int* tokens , const float* wte , int N, int C, int V);
template void encoder_forward_ref<double>(double* out , const int* tokens , const double* wte , int N, int C, int V);
template void encoder_backward_ref<float>(float* dwte , const float* dout , const int* tokens , int N, int C, int V);
template void encoder_backward_ref<double>(double* dwte , const double* dout , const int* tokens , int N, int C, int V);

}  // namespace owlore
