#include <cmath>
#include <vector>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
// One row of logits and its log-sum-exp (the only place logits exist, one row at a time).
double logits_row(std::vector<float>& logits, const float* x, const float* weight, int C, int V) {
  double max_logit = -INFINITY;
  for (int v = 0; v < V; v++) {
    const float* w = weight + (int64_t)v * C;
    float acc = 0.0f;
    for (int c = 0; c < C; c++) acc += x[c] * w[c];
    logits[v] = acc;
    if (acc > max_logit) max_logit = acc;
  }
  double sum = 0.0;
  for (int v = 0; v < V; v++) sum += std::exp(logits[v] - max_logit);
  return max_logit + std::log(sum);
}
}  // namespace

void lm_head_ce_forward_ref(float* losses, const float* inp, const float* weight, const int* targets, int N, int C,
                            int V) {
  std::vector<float> logits(V);
  for (int n = 0; n < N; n++) {
    if (targets[n] < 0) {
      losses[n] = 0.0f;
      continue;
    }
    const double lse = logits_row(logits, inp + (int64_t)n * C, weight, C, V);
    losses[n] = (float)(lse - logits[targets[n]]);
  }
}

void lm_head_ce_backward_ref(float* dinp, float* dweight, const float* inp, const float* weight, const int* targets,
                             float loss_scale, int N, int C, int V) {
  std::vector<float> logits(V);
  for (int n = 0; n < N; n++) {
    const float* x = inp + (int64_t)n * C;
    float* dx = dinp + (int64_t)n * C;
    for (int c = 0; c < C; c++) dx[c] = 0.0f;
    if (targets[n] < 0) continue;
    const double lse = logits_row(logits, x, weight, C, V);
    for (int v = 0; v < V; v++) {
      const float dlogit = loss_scale * (float)(std::exp(logits[v] - lse) - (v == targets[n] ? 1.0 : 0.0));
      const float* w = weight + (int64_t)v * C;
      for (int c = 0; c < C; c++) dx[c] += dlogit * w[c];
      if (dweight) {
        float* dw = dweight + (int64_t)v * C;
        for (int c = 0; c < C; c++) dw[c] += dlogit * x[c];
      }
    }
  }
}

}  // namespace owlore
