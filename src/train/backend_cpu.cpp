#include <algorithm>
#include <map>

#include "kernels/ref/ops_ref.h"
#include "optim/adamw_cpu.h"
#include "train/backend.h"

namespace owlore {

namespace {

class CpuBackend final : public TrainBackend {
 public:
  CpuBackend(const ModelLayout& layout, std::vector<float> weights, const OptimizerOptions& o)
      : layout_(layout),
        weights_(std::move(weights)),
        grads_(layout.total, 0.0f),
        model_(layout),
        optimizer_(layout, AdamWConfig{o.beta1, o.beta2, o.eps, o.weight_decay}),
        options_(o),
        galore_(layout.tensors.size()),
        rng_(o.seed ^ 0x6A09E667F3BCC909ull),
        mask_(TrainMask::all(layout.config.n_layers)) {}

  std::string device_name() const override { return "cpu"; }
  void set_mask(const TrainMask& mask) override {
    mask_ = mask;
    optimizer_.release_untrained(mask);
    for (size_t i = 0; i < layout_.tensors.size(); i++)
      if (!tensor_trains(layout_, layout_.tensors[i], mask)) galore_[i] = GaloreState{}, norm_adam_.erase(i);
  }

  double forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T, float loss_scale) override {
    const double loss = model_.forward(weights_.data(), inputs, targets, B, T, nullptr);
    model_.backward(grads_.data(), weights_.data(), mask_, loss_scale);
    return loss;
  }
  double forward_loss(const int32_t* inputs, const int32_t* targets, int B, int T, int64_t* kept) override {
    return model_.forward(weights_.data(), inputs, targets, B, T, kept);
  }
  double grad_sum_squares() override {
    double sum = 0;
    for (const TensorSlot& t : layout_.tensors)
      if (tensor_trains(layout_, t, mask_)) sum += sum_squares_ref(grads_.data() + t.offset, t.numel());
    return sum;
  }
  void optimizer_step(float lr, float clip_scale) override {
    if (!options_.galore) {
      optimizer_.step(weights_.data(), grads_.data(), mask_, lr, clip_scale);
    } else {
      // GaLore on the matrices of trained layers; AdamW on everything else that trains.
      TrainMask adam_mask = mask_;
      adam_mask.layers.assign(mask_.layers.size(), false);
      optimizer_.step(weights_.data(), grads_.data(), adam_mask, lr, clip_scale);
      GaloreConfig config = options_.galore_config;
      config.beta1 = options_.beta1, config.beta2 = options_.beta2, config.eps = options_.eps;
      config.weight_decay = options_.weight_decay;
      for (size_t i = 0; i < layout_.tensors.size(); i++) {
        const TensorSlot& t = layout_.tensors[i];
        if (t.layer < 0 || !mask_.layers[t.layer]) continue;
        float* w = weights_.data() + t.offset;
        const float* g = grads_.data() + t.offset;
        if (t.is_matrix()) {
          GaloreState& s = galore_[i];
          if (s.rows == 0) s = galore_state((int)t.rows, (int)t.cols, config);
          galore_adam_step(w, g, (int)t.rows, (int)t.cols, s, config, lr, clip_scale, rng_);
        } else {
          norm_adam_[i].step++;  // norm weights: full-rank AdamW, no decay
          auto& st = norm_adam_[i];
          if (st.m.empty()) st.m.assign(t.numel(), 0.0f), st.v.assign(t.numel(), 0.0f);
          adamw_ref(w, st.m.data(), st.v.data(), g, t.numel(), lr, options_.beta1, options_.beta2, options_.eps, 0.0f,
                    st.step, clip_scale);
        }
      }
    }
    std::fill(grads_.begin(), grads_.end(), 0.0f);
  }
  void read_weights(std::vector<float>& out) override { out = weights_; }
  MemoryReport memory() override {
    double bytes = (double)(weights_.size() + grads_.size()) * sizeof(float) + optimizer_.state_bytes();
    for (const GaloreState& s : galore_) bytes += (double)(s.projector.size() + s.m.size() + s.v.size()) * sizeof(float);
    for (const auto& [i, s] : norm_adam_) bytes += (double)(s.m.size() + s.v.size()) * sizeof(float);
    peak_ = std::max(peak_, bytes);
    return {bytes, peak_};
  }

 private:
  const ModelLayout& layout_;
  std::vector<float> weights_, grads_;
  CpuModel<float> model_;
  CpuAdamW optimizer_;
  OptimizerOptions options_;
  std::vector<GaloreState> galore_;  // per layout tensor (matrices of trained layers)
  struct NormState {
    std::vector<float> m, v;
    int step = 0;
  };
  std::map<size_t, NormState> norm_adam_;  // norm weights of trained layers under GaLore
  Rng rng_;
  TrainMask mask_;
  double peak_ = 0;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_backend(const ModelLayout& layout, std::vector<float> weights,
                                               const OptimizerOptions& options) {
  return std::make_unique<CpuBackend>(layout, std::move(weights), options);
}

}  // namespace owlore
