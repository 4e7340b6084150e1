#include <algorithm>
#include <map>

#include "base/error.h"
#include "kernels/ref/ops_ref.h"
#include "optim/adamw_cpu.h"
#include "optim/optimizer_state.h"
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
        mask_(TrainMask::all(layout.config.n_layers)) {}

  std::string device_name() const override { return "cpu"; }
  void set_mask(const TrainMask& mask, bool resample) override {
    // A decoder layer loses its state when it leaves (drop) or at every re-sampling (reset);
    // with keep it stays in memory (host memory is where the CPU keeps everything anyway).
    TrainMask keep_state = mask;
    if (options_.state_policy == StatePolicy::keep) keep_state.layers.assign(mask.layers.size(), true);
    if (options_.state_policy == StatePolicy::reset && resample) keep_state.layers.assign(mask.layers.size(), false);
    mask_ = mask;
    optimizer_.release_untrained(keep_state);
    for (size_t i = 0; i < layout_.tensors.size(); i++)
      if (!tensor_trains(layout_, layout_.tensors[i], keep_state)) galore_[i] = GaloreState{}, norm_adam_.erase(i);
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
  ProjectorReport projector_report() const override { return projector_report_; }

  void optimizer_step(float lr, float clip_scale) override {
    projector_report_ = ProjectorReport{};
    if (!options_.galore) {
      optimizer_.step(weights_.data(), grads_.data(), mask_, lr, clip_scale);
    } else {
      // GaLore on the matrices of trained layers; AdamW on everything else that trains.
      TrainMask adam_mask = mask_;
      adam_mask.layers.assign(mask_.layers.size(), false);
      optimizer_.step(weights_.data(), grads_.data(), adam_mask, lr, clip_scale);
      const GaloreConfig config = galore_config();
      for (size_t i = 0; i < layout_.tensors.size(); i++) {
        const TensorSlot& t = layout_.tensors[i];
        if (t.layer < 0 || !mask_.layers[t.layer]) continue;
        float* w = weights_.data() + t.offset;
        const float* g = grads_.data() + t.offset;
        if (t.is_matrix()) {
          GaloreState& s = galore_[i];
          if (s.rows == 0) s = galore_state((int)t.rows, (int)t.cols, config);
          const int refreshes = s.refreshes;
          Rng rng = refresh_rng(options_.seed, i, s.refreshes);
          galore_adam_step(w, g, (int)t.rows, (int)t.cols, s, config, lr, clip_scale, rng);
          if (s.refreshes != refreshes) projector_report_.add(s.captured_energy);
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

  // The schema of optim/optimizer_state.h: every tensor that trains has state (fresh if it has
  // not stepped yet), and under --state keep so do decoder tensors that trained before.
  void save_state(StateBundle& out) override {
    out.tensors["weights"] = weights_;
    begin_optimizer_state(out);
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const TensorSlot& t = layout_.tensors[i];
      const bool trains = tensor_trains(layout_, t, mask_);
      if (is_galore(t)) {
        if (galore_[i].rows != 0) add_galore_state(out, t.name, galore_[i]);
        else if (trains) add_galore_state(out, t.name, fresh_galore(t));
        continue;
      }
      const AdamTensorState& s = adam_state(i);
      if (!s.m.empty()) add_adam_state(out, t.name, s);
      else if (trains) add_adam_state(out, t.name, {std::vector<float>(t.numel(), 0.0f), std::vector<float>(t.numel(), 0.0f), 0});
    }
  }

  // Expects set_mask to have been called with the saved mask. Every size, rank and counter is
  // checked (StateReader); state for a tensor this run would not keep is an error.
  void load_state(StateReader& in) override {
    weights_ = in.tensor("weights", layout_.total);
    galore_.assign(layout_.tensors.size(), GaloreState{});
    norm_adam_.clear();
    std::vector<std::string> handled_adam, handled_galore;
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const TensorSlot& t = layout_.tensors[i];
      const bool trains = tensor_trains(layout_, t, mask_);
      const bool may_have = trains || (options_.state_policy == StatePolicy::keep && t.layer >= 0);
      const bool galore = is_galore(t);
      const bool present = galore ? has_galore_state(in, t.name) : has_adam_state(in, t.name);
      OWLORE_REQUIRE(present || !trains, in.source(), ": no ", galore ? "GaLore" : "Adam", " state for ", t.name,
                     ", which trains at this step");
      if (!present || !may_have) continue;  // a stray entry is named by check_optimizer_state_names
      if (galore) {
        galore_[i] = read_galore_state(in, t, fresh_galore(t));
        handled_galore.push_back(t.name);
      } else {
        AdamTensorState s = read_adam_state(in, t);
        if (options_.galore && t.layer >= 0) norm_adam_[i] = std::move(s);
        else optimizer_.set_state(i, std::move(s));
        handled_adam.push_back(t.name);
      }
    }
    check_optimizer_state_names(in, handled_adam, handled_galore);
  }
  MemoryReport memory() override {
    double bytes = (double)(weights_.size() + grads_.size()) * sizeof(float) + optimizer_.state_bytes();
    for (const GaloreState& s : galore_) bytes += (double)(s.projector.size() + s.m.size() + s.v.size()) * sizeof(float);
    for (const auto& [i, s] : norm_adam_) bytes += (double)(s.m.size() + s.v.size()) * sizeof(float);
    peak_ = std::max(peak_, bytes);
    return {bytes, peak_};
  }

 private:
  bool is_galore(const TensorSlot& t) const { return options_.galore && t.layer >= 0 && t.is_matrix(); }
  GaloreState fresh_galore(const TensorSlot& t) const { return galore_state((int)t.rows, (int)t.cols, galore_config()); }
  GaloreConfig galore_config() const {
    GaloreConfig config = options_.galore_config;
    config.beta1 = options_.beta1, config.beta2 = options_.beta2, config.eps = options_.eps;
    config.weight_decay = options_.weight_decay;
    return config;
  }
  // Full-rank Adam state of tensor i (GaLore layers' norms keep theirs beside CpuAdamW's).
  const AdamTensorState& adam_state(size_t i) const {
    static const AdamTensorState none;
    if (!options_.galore || layout_.tensors[i].layer < 0) return optimizer_.state(i);
    const auto it = norm_adam_.find(i);
    return it == norm_adam_.end() ? none : it->second;
  }

  const ModelLayout& layout_;
  std::vector<float> weights_, grads_;
  CpuModel<float> model_;
  CpuAdamW optimizer_;
  OptimizerOptions options_;
  std::vector<GaloreState> galore_;  // per layout tensor (matrices of trained layers)
  std::map<size_t, AdamTensorState> norm_adam_;  // norm weights of trained layers under GaLore
  ProjectorReport projector_report_;
  TrainMask mask_;
  double peak_ = 0;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_backend(const ModelLayout& layout, std::vector<float> weights,
                                               const OptimizerOptions& options) {
  return std::make_unique<CpuBackend>(layout, std::move(weights), options);
}

}  // namespace owlore
