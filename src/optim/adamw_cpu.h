// AdamW over the fp32 CPU weight arena: moments only for the tensors that train (a frozen tensor
// costs nothing), one adamw_ref call per tensor. The CPU twin of the GPU optimizer.
#pragma once
#include <cstdint>
#include <vector>

#include "base/state_bundle.h"
#include "model/layout.h"
#include "model/model_cpu.h"

namespace owlore {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
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
  // Moments and step counts of every tensor that has state, under "<prefix><tensor name>.m/.v"
  // and meta[prefix + "steps"]; import restores exactly what export wrote.
  void export_state(StateBundle& out, const std::string& prefix) const;
  void import_state(const StateBundle& in, const std::string& prefix);
  // Bytes of moment state currently held.
  int64_t state_bytes() const;

 private:
  struct TensorState {
    std::vector<float> m, v;
    int step = 0;
  };
  const ModelLayout& layout_;
  AdamWConfig config_;
  std::vector<TensorState> state_;  // per layout tensor
};

// Whether tensor t trains under mask (the tied head trains with the embedding).
bool tensor_trains(const ModelLayout& layout, const TensorSlot& t, const TrainMask& mask);

}  // namespace owlore
