#include <algorithm>
#include <map>

#include "base/error.h"
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
        mask_(TrainMask::all(layout.config.n_layers)) {}

  std::string device_name() const override { return "cpu"; }
  void set_mask(const TrainMask& mask, bool resample) override {
    // A decoder layer loses its state when it leaves (drop) or at every re-sampling (reset);
    // with keep it stays in memory (host memory is where the CPU keeps everything anyway).
    TrainMask keep_state = mask;
    if (options_.state_policy == "keep") keep_state.layers.assign(mask.layers.size(), true);
    if (options_.state_policy == "reset" && resample) keep_state.layers.assign(mask.layers.size(), false);
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

  void save_state(StateBundle& out) override {
    out.tensors["weights"] = weights_;
    optimizer_.export_state(out, "adam.");
    nlohmann::json galore = nlohmann::json::object(), norms = nlohmann::json::object();
    for (size_t i = 0; i < galore_.size(); i++) {
      const GaloreState& s = galore_[i];
      if (s.rows == 0) continue;
      const std::string& name = layout_.tensors[i].name;
      out.tensors["galore." + name + ".projector"] = s.projector;
      out.tensors["galore." + name + ".m"] = s.m;
      out.tensors["galore." + name + ".v"] = s.v;
      galore[name] = {{"rows", s.rows}, {"cols", s.cols}, {"rank", s.rank}, {"right", s.side == ProjectionSide::right},
                      {"step", s.step}, {"refreshes", s.refreshes}, {"captured_energy", s.captured_energy}};
    }
    for (const auto& [i, s] : norm_adam_) {
      const std::string& name = layout_.tensors[i].name;
      out.tensors["norm_adam." + name + ".m"] = s.m;
      out.tensors["norm_adam." + name + ".v"] = s.v;
      norms[name] = s.step;
    }
    out.meta["galore"] = galore;
    out.meta["norm_adam"] = norms;
  }

  void load_state(const StateBundle& in) override {
    const std::vector<float>& w = in.tensors.at("weights");
    OWLORE_REQUIRE(w.size() == weights_.size(), "trainer state: ", w.size(), " weights, the model has ", weights_.size());
    weights_ = w;
    optimizer_.import_state(in, "adam.");
    galore_.assign(layout_.tensors.size(), GaloreState{});
    norm_adam_.clear();
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const std::string& name = layout_.tensors[i].name;
      if (in.meta["galore"].contains(name)) {
        const auto& j = in.meta["galore"][name];
        GaloreState& s = galore_[i];
        s.rows = j["rows"], s.cols = j["cols"], s.rank = j["rank"];
        s.side = j["right"].get<bool>() ? ProjectionSide::right : ProjectionSide::left;
        s.step = j["step"], s.refreshes = j["refreshes"], s.captured_energy = j["captured_energy"];
        s.projector = in.tensors.at("galore." + name + ".projector");
        s.m = in.tensors.at("galore." + name + ".m");
        s.v = in.tensors.at("galore." + name + ".v");
      }
      if (in.meta["norm_adam"].contains(name)) {
        NormState& s = norm_adam_[i];
        s.m = in.tensors.at("norm_adam." + name + ".m");
        s.v = in.tensors.at("norm_adam." + name + ".v");
        s.step = in.meta["norm_adam"][name];
      }
    }
  }
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
