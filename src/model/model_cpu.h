// The whole LLaMA forward and backward on the CPU, built from the op twins. It is the
// reference the GPU model is checked against and the engine of the CPU trainer (tiny models in
// CI). Templated on the scalar type: float to train, double for the whole-model gradient check.
//
// One decoder layer (DESIGN.md §1), x the residual stream (N = B*T rows of C):
//   ln1 = rmsnorm(x) ; qkv = rope(ln1 Wqkv^T) ; att = attention(qkv) ; x += att Wo^T
//   ln2 = rmsnorm(x) ; h = swiglu(ln2 Wgate_up^T) ; x += h Wdown^T
// then loss = cross_entropy(rmsnorm(x) Whead^T, targets), averaged over the kept targets.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layout.h"
#include "model/train_mask.h"

namespace owlore {

// The input rows of a layer's matrices saved by the forward (for outlier scoring, DESIGN.md §1):
// qkv -> ln1 (N, C) feeds q, k, v; o -> att (N, q_dim); gate_up -> ln2 (N, C) feeds gate, up;
// down -> h (N, ffn).
enum class MatrixInput { qkv, o, gate_up, down };

template <typename Real>
class CpuModel {
 public:
  explicit CpuModel(const ModelLayout& layout) : layout_(layout), inv_freq_(rope_inv_freq(layout.config)) {}

  // Runs the forward pass and keeps what the backward needs. Returns the summed loss over the
  // kept targets (targets >= 0); *kept receives their count.
  double forward(const Real* weights, const int32_t* inputs /*(B,T)*/, const int32_t* targets /*(B,T)*/, int B,
                 int T, int64_t* kept);
  // Adds d(loss_scale * summed loss)/d(weights) into grads (arena layout) for the parameters
  // mask trains; other entries are left untouched. Uses the activations of the last forward.
  void backward(Real* grads, const Real* weights, const TrainMask& mask, Real loss_scale);
  // Logits of the last position of each sequence (for generation): (B, V).
  std::vector<Real> last_logits(const Real* weights) const;
  // Logits of every position of the last forward (for reference fixtures): (B*T, V).
  std::vector<Real> all_logits(const Real* weights) const;
  // The saved input of one matrix group of `layer` from the last forward, (B*T, in_features).
  const std::vector<Real>& matrix_input(int layer, MatrixInput which) const;

 private:
  struct LayerActivations {
    std::vector<Real> x_in, ln1, rstd1, qkv, att, lse, x_mid, ln2, rstd2, gate_up, h;
  };
  const ModelLayout& layout_;
  std::vector<double> inv_freq_;  // RoPE frequencies (head_dim/2)
  int B_ = 0, T_ = 0;
  std::vector<int32_t> inputs_, targets_;
  std::vector<LayerActivations> acts_;
  std::vector<Real> x_final_, ln_f_, rstd_f_;
};

// Initializes a fresh model: matrices ~ N(0, 0.02), norm weights 1 (the LLaMA/GPT-2 recipe).
template <typename Real>
void init_weights(const ModelLayout& layout, Real* weights, uint64_t seed);

}  // namespace owlore
