// AdamW over the fp32 CPU weight arena: moments only for the tensors that train (a frozen tensor
// costs nothing), one adamw_ref call per tensor. The CPU twin of the GPU optimizer.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layout.h"
#include "model/train_mask.h"
#include "optim/optimizer_state.h"

namespace owlore {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f, weight_decay = 0.0f;
  // Weight decay applies to matrices only (norm weights are not decayed), as in the LISA and
  // OwLore training scripts (HF Trainer's no-decay list for LayerNorm/RMSNorm weights).
};

class CpuAdamW {
 public:
  CpuAdamW(const ModelLayout& layout, AdamWConfig config) : layout_(layout), config_(config) {}
  // Updates every tensor `mask` trains with its gradient times grad_scale (the clip factor).
  // Moments of a tensor are created zeroed the first time it trains; its step count is its own.
  void step(float* weights, const float* grads, const TrainMask& mask, float lr, float grad_scale);
  // Frees the moments of every tensor mask does not train (DESIGN.md §2, state policy "drop": a
  // layer that leaves the active set starts fresh when it comes back).
  void release_untrained(const TrainMask& mask);
  // Tensor i's moments and step (empty moments: no state yet), and setting them on resume.
  const AdamTensorState& state(size_t i) const;
  void set_state(size_t i, AdamTensorState state);
  // Bytes of moment state currently held.
  int64_t state_bytes() const;

 private:
  const ModelLayout& layout_;
  AdamWConfig config_;
  std::vector<AdamTensorState> state_;  // per layout tensor
};

}  // namespace owlore
