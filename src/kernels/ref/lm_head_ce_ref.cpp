#include <cmath>
#include <vector>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
// One row of logits and its log-sum-exp (the only place logits exist, one row at a time).
template <typename Real>
double logits_row(std::vector<Real>& logits, const Real* x, const Real* weight, int C, int V) {
  double max_logit = -INFINITY;
  for (int v = 0; v < V; v++) {
    const Real* w = weight + (int64_t)v * C;
    Real acc = Real(0);
    for (int c = 0; c < C; c++) acc += x[c] * w[c];
    logits[v] = acc;
    if (acc > max_logit) max_logit = acc;
  }
  double sum = 0.0;
  for (int v = 0; v < V; v++) sum += std::exp(logits[v] - max_logit);
  return max_logit + std::log(sum);
}
}  // namespace

template <typename Real>
void lm_head_ce_forward_ref(Real* losses, const Real* inp, const Real* weight, const int* targets, int N, int C,
                            int V) {
  std::vector<Real> logits(V);
  for (int n = 0; n < N; n++) {
    if (targets[n] < 0) {
      losses[n] = Real(0);
      continue;
    }
    const double lse = logits_row(logits, inp + (int64_t)n * C, weight, C, V);
    losses[n] = (Real)(lse - logits[targets[n]]);
  }
}

template <typename Real>
void lm_head_ce_backward_ref(Real* dinp, Real* dweight, const Real* inp, const Real* weight, const int* targets,
                             Real loss_scale, int N, int C, int V) {
  std::vector<Real> logits(V);
  for (int n = 0; n < N; n++) {
    const Real* x = inp + (int64_t)n * C;
    Real* dx = dinp + (int64_t)n * C;
    for (int c = 0; c < C; c++) dx[c] = Real(0);
    if (targets[n] < 0) continue;
    const double lse = logits_row(logits, x, weight, C, V);
    for (int v = 0; v < V; v++) {
      const Real dlogit = loss_scale * (Real)(std::exp(logits[v] - lse) - (v == targets[n] ? 1.0 : 0.0));
      const Real* w = weight + (int64_t)v * C;
      for (int c = 0; c < C; c++) dx[c] += dlogit * w[c];
      if (dweight) {
        Real* dw = dweight + (int64_t)v * C;
        for (int c = 0; c < C; c++) dw[c] += dlogit * x[c];
      }
    }
  }
}


template void lm_head_ce_forward_ref<float>(float* losses , const float* inp , const float* weight , const int* targets , int N, int C, int V);
template void lm_head_ce_forward_ref<double>(double* losses , const double* inp , const double* weight , const int* targets , int N, int C, int V);
template void lm_head_ce_backward_ref<float>(float* dinp , float* dweight , const float* inp , const float* weight , const int* targets , float loss_scale, int N, int C, int V);
template void lm_head_ce_backward_ref<double>(double* dinp , double* dweight , const double* inp , const double* weight , const int* targets , double loss_scale, int N, int C, int V);

}  // namespace owlore
