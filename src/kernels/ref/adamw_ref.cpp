#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

void adamw_ref(float* param, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
               float eps, float weight_decay, int step, float grad_scale) {
  const float bias1 = 1.0f - std::pow(beta1, (float)step);
  const float bias2 = 1.0f - std::pow(beta2, (float)step);
  for (int64_t i = 0; i < n; i++) {
    const float g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float m_hat = m[i] / bias1;
    const float v_hat = v[i] / bias2;
    param[i] -= lr * weight_decay * param[i];
    param[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

double sum_squares_ref(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return s;
}

}  // namespace owlore
