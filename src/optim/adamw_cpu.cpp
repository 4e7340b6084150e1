#include "optim/adamw_cpu.h"

#include "kernels/ref/ops_ref.h"

namespace owlore {

bool tensor_trains(const ModelLayout& layout, const TensorSlot& t, const TrainMask& mask) {
  if (t.layer >= 0) return mask.layers[t.layer];
  if (t.offset == layout.embedding) return mask.embedding;
  return mask.head;  // final norm and untied head
}

void CpuAdamW::step(float* weights, const float* grads, const TrainMask& mask, float lr, float grad_scale) {
  state_.resize(layout_.tensors.size());
  for (size_t i = 0; i < layout_.tensors.size(); i++) {
    const TensorSlot& t = layout_.tensors[i];
    if (!tensor_trains(layout_, t, mask)) continue;
    TensorState& s = state_[i];
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
    if (!tensor_trains(layout_, layout_.tensors[i], mask)) state_[i] = TensorState{};
}

void CpuAdamW::export_state(StateBundle& out, const std::string& prefix) const {
  nlohmann::json steps = nlohmann::json::object();
  for (size_t i = 0; i < state_.size(); i++) {
    if (state_[i].m.empty()) continue;
    const std::string& name = layout_.tensors[i].name;
    out.tensors[prefix + name + ".m"] = state_[i].m;
    out.tensors[prefix + name + ".v"] = state_[i].v;
    steps[name] = state_[i].step;
  }
  out.meta[prefix + "steps"] = steps;
}

void CpuAdamW::import_state(const StateBundle& in, const std::string& prefix) {
  state_.assign(layout_.tensors.size(), TensorState{});
  const auto& steps = in.meta.at(prefix + "steps");
  for (size_t i = 0; i < layout_.tensors.size(); i++) {
    const std::string& name = layout_.tensors[i].name;
    if (!steps.contains(name)) continue;
    state_[i].m = in.tensors.at(prefix + name + ".m");
    state_[i].v = in.tensors.at(prefix + name + ".v");
    state_[i].step = steps[name].get<int>();
  }
}

int64_t CpuAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const TensorState& s : state_) bytes += (int64_t)(s.m.size() + s.v.size()) * sizeof(float);
  return bytes;
}

}  // namespace owlore
