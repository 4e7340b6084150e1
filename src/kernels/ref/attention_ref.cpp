#include <cmath>
#include <vector>

#include "kernels/ref/ops_ref.h"

namespace owlore {

namespace {
template <typename Real>
struct QkvView {
  const Real* qkv;
  int T, Hq, Hkv, hd;
  int64_t row() const { return (int64_t)(Hq + 2 * Hkv) * hd; }
  const Real* q(int b, int t, int h) const { return qkv + ((int64_t)b * T + t) * row() + (int64_t)h * hd; }
  const Real* k(int b, int t, int h) const { return q(b, t, Hq + h / (Hq / Hkv)); }
  const Real* v(int b, int t, int h) const { return q(b, t, Hq + Hkv + h / (Hq / Hkv)); }
};

template <typename Real>
double dot(const Real* a, const Real* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

// Probabilities P[s], s <= t, of query (b,t,h); returns the row's log-sum-exp.
template <typename Real>
Real softmax_row(std::vector<double>& P, const QkvView<Real>& in, int b, int t, int h, double scale) {
  double max_score = -INFINITY;
  for (int s = 0; s <= t; s++) {
    P[s] = dot(in.q(b, t, h), in.k(b, s, h), in.hd) * scale;
    if (P[s] > max_score) max_score = P[s];
  }
  double sum = 0.0;
  for (int s = 0; s <= t; s++) sum += std::exp(P[s] - max_score);
  for (int s = 0; s <= t; s++) P[s] = std::exp(P[s] - max_score) / sum;
  return (Real)(max_score + std::log(sum));
}
}  // namespace

template <typename Real>
void attention_forward_ref(Real* out, Real* lse, const Real* qkv, int B, int T, int Hq, int Hkv, int head_dim) {
  const QkvView<Real> in{qkv, T, Hq, Hkv, head_dim};
  const double scale = 1.0 / std::sqrt((double)head_dim);
  std::vector<double> P(T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++)
      for (int t = 0; t < T; t++) {
        lse[((int64_t)b * Hq + h) * T + t] = softmax_row(P, in, b, t, h, scale);
        Real* o = out + ((int64_t)b * T + t) * Hq * head_dim + (int64_t)h * head_dim;
        for (int i = 0; i < head_dim; i++) {
          double acc = 0.0;
          for (int s = 0; s <= t; s++) acc += P[s] * in.v(b, s, h)[i];
          o[i] = (Real)acc;
        }
      }
}

template <typename Real>
void attention_backward_ref(Real* dqkv, const Real* dout, const Real* qkv, const Real* out, const Real* lse,
                            int B, int T, int Hq, int Hkv, int head_dim) {
  (void)lse;  // the twin recomputes P exactly; the kernel uses lse to skip the max/sum pass
  const QkvView<Real> in{qkv, T, Hq, Hkv, head_dim};
  const int64_t row = in.row();
  const int group = Hq / Hkv;
  const double scale = 1.0 / std::sqrt((double)head_dim);
  for (int64_t i = 0; i < (int64_t)B * T * row; i++) dqkv[i] = 0;
  std::vector<double> P(T), dS(T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      const int kv_head = h / group;
      for (int t = 0; t < T; t++) {
        softmax_row(P, in, b, t, h, scale);
        const Real* g = dout + ((int64_t)b * T + t) * Hq * head_dim + (int64_t)h * head_dim;
        const Real* o = out + ((int64_t)b * T + t) * Hq * head_dim + (int64_t)h * head_dim;
        const double D = dot(g, o, head_dim);
        for (int s = 0; s <= t; s++) dS[s] = P[s] * (dot(g, in.v(b, s, h), head_dim) - D);
        Real* dq = dqkv + ((int64_t)b * T + t) * row + (int64_t)h * head_dim;
        for (int s = 0; s <= t; s++) {
          Real* dk = dqkv + ((int64_t)b * T + s) * row + (int64_t)(Hq + kv_head) * head_dim;
          Real* dv = dqkv + ((int64_t)b * T + s) * row + (int64_t)(Hq + Hkv + kv_head) * head_dim;
          const Real* k = in.k(b, s, h);
          const Real* q = in.q(b, t, h);
          for (int i = 0; i < head_dim; i++) {
            dq[i] += (Real)(dS[s] * scale * k[i]);
            dk[i] += (Real)(dS[s] * scale * q[i]);
            dv[i] += (Real)(P[s] * g[i]);
          }
        }
      }
    }
}


template void attention_forward_ref<float>(float* out , float* lse , const float* qkv , int B, int T, int Hq, int Hkv, int head_dim);
template void attention_forward_ref<double>(double* out , double* lse , const double* qkv , int B, int T, int Hq, int Hkv, int head_dim);
template void attention_backward_ref<float>(float* dqkv , const float* dout , const float* qkv , const float* out , const float* lse , int B, int T, int Hq, int Hkv, int head_dim);
template void attention_backward_ref<double>(double* dqkv , const double* dout , const double* qkv , const double* out , const double* lse , int B, int T, int Hq, int Hkv, int head_dim);

}  // namespace owlore
