#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void swiglu_forward_ref(Real* out, const Real* gate_up, int N, int F) {
  for (int n = 0; n < N; n++) {
    const Real* gate = gate_up + (int64_t)n * 2 * F;
    const Real* up = gate + F;
    for (int f = 0; f < F; f++) {
      const Real s = Real(1) / (Real(1) + std::exp(-gate[f]));
      out[(int64_t)n * F + f] = gate[f] * s * up[f];
    }
  }
}

template <typename Real>
void swiglu_backward_ref(Real* dgate_up, const Real* dout, const Real* gate_up, int N, int F) {
  for (int n = 0; n < N; n++) {
    const Real* gate = gate_up + (int64_t)n * 2 * F;
    const Real* up = gate + F;
    Real* dgate = dgate_up + (int64_t)n * 2 * F;
    Real* dup = dgate + F;
    for (int f = 0; f < F; f++) {
      const Real g = dout[(int64_t)n * F + f];
      const Real s = Real(1) / (Real(1) + std::exp(-gate[f]));
      dgate[f] = g * up[f] * s * (Real(1) + gate[f] * (Real(1) - s));
      dup[f] = g * gate[f] * s;
    }
  }
}


template void swiglu_forward_ref<float>(float* out , const float* gate_up , int N, int F);
template void swiglu_forward_ref<double>(double* out , const double* gate_up , int N, int F);
template void swiglu_backward_ref<float>(float* dgate_up , const float* dout , const float* gate_up , int N, int F);
template void swiglu_backward_ref<double>(double* dgate_up , const double* dout , const double* gate_up , int N, int F);

}  // namespace owlore
