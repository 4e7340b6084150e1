#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void residual_forward_ref(Real* out, const Real* a, const Real* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}


template void residual_forward_ref<float>(float* out , const float* a , const float* b , int64_t n);
template void residual_forward_ref<double>(double* out , const double* a , const double* b , int64_t n);

}  // namespace owlore
