#include <cmath>

#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
void adamw_ref(Real* param, Real* m, Real* v, const Real* grad, int64_t n, Real lr, Real beta1, Real beta2,
               Real eps, Real weight_decay, int step, Real grad_scale) {
  const Real bias1 = Real(1) - std::pow(beta1, (Real)step);
  const Real bias2 = Real(1) - std::pow(beta2, (Real)step);
  for (int64_t i = 0; i < n; i++) {
    const Real g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (Real(1) - beta1) * g;
    v[i] = beta2 * v[i] + (Real(1) - beta2) * g * g;
    const Real m_hat = m[i] / bias1;
    const Real v_hat = v[i] / bias2;
    param[i] -= lr * weight_decay * param[i];
    param[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

template <typename Real>
double sum_squares_ref(const Real* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return s;
}


template void adamw_ref<float>(float* param , float* m , float* v , const float* grad , int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale);
template void adamw_ref<double>(double* param , double* m , double* v , const double* grad , int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, int step, double grad_scale);
template double sum_squares_ref<float>(const float* x , int64_t n);
template double sum_squares_ref<double>(const double* x , int64_t n);

}  // namespace owlore
