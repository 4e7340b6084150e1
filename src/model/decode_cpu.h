// Token-by-token inference on the CPU with a key/value cache: what `owlore generate` runs. The
// same math as CpuModel::forward for one new position (DESIGN.md §1), reusing the op twins,
// so generation needs one pass over the weights per token instead of one per prefix.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layout.h"

namespace owlore {

class CpuDecoder {
 public:
  CpuDecoder(const ModelLayout& layout, const float* weights, int max_tokens);
  // Feeds one token at the next position; returns the logits (V) for the position after it.
  const std::vector<float>& step(int32_t token);
  int position() const { return position_; }

 private:
  const ModelLayout& layout_;
  const float* w_;
  int max_tokens_, position_ = 0;
  std::vector<double> inv_freq_;  // RoPE frequencies (head_dim/2)
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer (max_tokens, kv_dim)
  std::vector<float> x_, ln_, qkv_, att_, proj_, gate_up_, h_, rstd_, logits_;
};

}  // namespace owlore
