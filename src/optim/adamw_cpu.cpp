#include "optim/adamw_cpu.h"

#include "kernels/ref/ops_ref.h"

namespace owlore {

void CpuAdamW::step(float* weights, const float* grads, const TrainMask& mask, float lr, float grad_scale) {
  state_.resize(layout_.tensors.size());
  for (size_t i = 0; i < layout_.tensors.size(); i++) {
    const TensorSlot& t = layout_.tensors[i];
    if (!tensor_trains(layout_, t, mask)) continue;
    AdamTensorState& s = state_[i];
    if (s.m.empty()) s.m.assign(t.numel(), 0.0f), s.v.assign(t.numel(), 0.0f);
    s.step++;
    const float wd = t.is_matrix() ? config_.weight_decay : 0.0f;
    adamw_ref(weights + t.offset, s.m.data(), s.v.data(), grads + t.offset, t.numel(), lr, config_.beta1,
              config_.beta2, config_.eps, wd, s.step, grad_scale);
  }
}

void CpuAdamW::release_untrained(const TrainMask& mask) {
  state_.resize(layout_.tensors.size());
  for (size_t i = 0; i < layout_.tensors.size(); i++)
    if (!tensor_trains(layout_, layout_.tensors[i], mask)) state_[i] = AdamTensorState{};
}

const AdamTensorState& CpuAdamW::state(size_t i) const {
  static const AdamTensorState none;
  return i < state_.size() ? state_[i] : none;
}

void CpuAdamW::set_state(size_t i, AdamTensorState state) {
  state_.resize(layout_.tensors.size());
  state_.at(i) = std::move(state);
}

int64_t CpuAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const AdamTensorState& s : state_) bytes += (int64_t)(s.m.size() + s.v.size()) * sizeof(float);
  return bytes;
}

}  // namespace owlore
