#include <algorithm>

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
        mask_(TrainMask::all(layout.config.n_layers)) {}

  std::string device_name() const override { return "cpu"; }
  void set_mask(const TrainMask& mask) override { mask_ = mask; }

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
    optimizer_.step(weights_.data(), grads_.data(), mask_, lr, clip_scale);
    std::fill(grads_.begin(), grads_.end(), 0.0f);
  }
  void read_weights(std::vector<float>& out) override { out = weights_; }
  MemoryReport memory() override {
    const double bytes = (double)(weights_.size() + grads_.size()) * sizeof(float) + optimizer_.state_bytes();
    peak_ = std::max(peak_, bytes);
    return {bytes, peak_};
  }

 private:
  const ModelLayout& layout_;
  std::vector<float> weights_, grads_;
  CpuModel<float> model_;
  CpuAdamW optimizer_;
  TrainMask mask_;
  double peak_ = 0;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_backend(const ModelLayout& layout, std::vector<float> weights,
                                               const OptimizerOptions& options) {
  return std::make_unique<CpuBackend>(layout, std::move(weights), options);
}

}  // namespace owlore
