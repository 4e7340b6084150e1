#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

void swiglu_forward_ref(float* out, const float* gate_up, int N, int F) {
  for (int n = 0; n < N; n++) {
    const float* gate = gate_up + (int64_t)n * 2 * F;
    const float* up = gate + F;
    for (int f = 0; f < F; f++) {
      const float s = 1.0f / (1.0f + std::exp(-gate[f]));
      out[(int64_t)n * F + f] = gate[f] * s * up[f];
    }
  }
}

void swiglu_backward_ref(float* dgate_up, const float* dout, const float* gate_up, int N, int F) {
  for (int n = 0; n < N; n++) {
    const float* gate = gate_up + (int64_t)n * 2 * F;
    const float* up = gate + F;
    float* dgate = dgate_up + (int64_t)n * 2 * F;
    float* dup = dgate + F;
    for (int f = 0; f < F; f++) {
      const float g = dout[(int64_t)n * F + f];
      const float s = 1.0f / (1.0f + std::exp(-gate[f]));
      dgate[f] = g * up[f] * s * (1.0f + gate[f] * (1.0f - s));
      dup[f] = g * gate[f] * s;
    }
  }
}

}  // namespace owlore
