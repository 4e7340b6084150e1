// The GPU backend: GpuModel plus full-rank AdamW on bf16 weights (stochastic rounding) with
// fp32 or bf16 moments, for every tensor that trains. Decoder layers train in slots: a fixed
// number of (gradient, moments) slots allocated once at start; when the trained set changes, a
// layer that stays keeps its slot, a new layer takes a free slot with fresh (zeroed) state, and
// nothing is allocated or freed (DESIGN.md §2).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "base/error.h"
#include "kernels/adamw.cuh"
#include "model/model_gpu.h"
#include "optim/adamw_cpu.h"
#include "train/backend.h"

namespace owlore {

namespace {

class GpuBackend final : public TrainBackend {
 public:
  GpuBackend(const ModelLayout& layout, const std::vector<float>& weights, const OptimizerOptions& o, int max_batch,
             int seq, int n_slots, int lm_head_chunk_tokens)
      : layout_(layout), options_(o), n_slots_(std::min(n_slots, layout.config.n_layers)) {
    OWLORE_REQUIRE(o.moments == "fp32" || o.moments == "bf16", "--moments must be fp32 or bf16, got '", o.moments, "'");
    OWLORE_REQUIRE(cuda_available(), "--device cuda: no CUDA device is present (use --device cpu)");
    const ModelConfig& c = layout.config;
    model_ = std::make_unique<GpuModel>(layout, GpuModelOptions{max_batch, seq, lm_head_chunk_tokens}, plan_);
    const int64_t V = c.vocab, C = c.d_model;
    const size_t moment_bytes = o.moments == "fp32" ? 4 : 2;
    const int64_t layer_params = c.layer_params();
    // Global tensors (embedding, final norm, untied head) train for the whole run.
    i_grad_embedding_ = plan_.add(Arena::Gradients, "embedding", V * C * 4, "fp32");
    i_grad_final_norm_ = plan_.add(Arena::Gradients, "final norm", C * 4, "fp32");
    if (!c.tied_embeddings) i_grad_head_ = plan_.add(Arena::Gradients, "lm head", V * C * 4, "fp32");
    i_slot_grads_ = plan_.add(Arena::Gradients, std::to_string(n_slots_) + " layer slots", n_slots_ * layer_params * 4,
                              "fp32");
    const int64_t global_params = V * C * (c.tied_embeddings ? 1 : 2) + C;
    i_moments_global_ = plan_.add(Arena::OptimizerState, "Adam m, v (embedding, head, norm)",
                                  2 * global_params * moment_bytes, o.moments);
    i_moments_slots_ = plan_.add(Arena::OptimizerState, "Adam m, v (" + std::to_string(n_slots_) + " layer slots)",
                                 2 * n_slots_ * layer_params * moment_bytes, o.moments);
    i_scratch_ = plan_.add(Arena::Workspace, "norm scratch", (sum_squares_scratch_floats() + 1) * 4, "fp32");
    plan_.allocate();
    model_->bind(plan_);
    model_->upload_weights(weights.data());
    const cudaStream_t s = model_->stream();
    // Gradients and moments start at zero; after this, only slot resets touch them.
    CUDA_CHECK(cudaMemsetAsync(plan_.ptr(i_grad_embedding_), 0, plan_.bytes(Arena::Gradients), s));
    CUDA_CHECK(cudaMemsetAsync(plan_.ptr(i_moments_global_), 0, plan_.bytes(Arena::OptimizerState), s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    // Per-tensor moment offsets: global tensors packed in arena order inside the global block.
    int64_t cursor = 0;
    for (const TensorSlot& t : layout.tensors)
      if (t.layer < 0) global_offset_[t.offset] = cursor, cursor += t.numel();
    global_params_ = cursor;
    slot_of_layer_.assign(c.n_layers, -1);
    layer_of_slot_.assign(n_slots_, -1);
    tensor_steps_.assign(layout.tensors.size(), 0);
    // No decoder layer trains until the loop says which (set_mask before the first step).
    set_mask(TrainMask{std::vector<bool>(c.n_layers, false), true, true});
  }

  std::string device_name() const override { return cuda_device_name(); }
  std::string plan_table() const override { return plan_.table(); }

  void set_mask(const TrainMask& mask) override {
    const ModelConfig& c = layout_.config;
    int wanted = 0;
    for (bool b : mask.layers) wanted += b;
    OWLORE_REQUIRE(wanted <= n_slots_, "asked to train ", wanted, " decoder layers with ", n_slots_, " slots");
    // Layers leaving the set free their slot (their state is dropped).
    for (int l = 0; l < c.n_layers; l++)
      if (!mask.layers[l] && slot_of_layer_[l] >= 0) {
        layer_of_slot_[slot_of_layer_[l]] = -1;
        slot_of_layer_[l] = -1;
      }
    // Joining layers take a free slot with zeroed gradient and moments, and step counts from 1.
    for (int l = 0; l < c.n_layers; l++)
      if (mask.layers[l] && slot_of_layer_[l] < 0) {
        const int slot = (int)(std::find(layer_of_slot_.begin(), layer_of_slot_.end(), -1) - layer_of_slot_.begin());
        slot_of_layer_[l] = slot;
        layer_of_slot_[slot] = l;
        reset_slot(slot);
        for (size_t i = 0; i < layout_.tensors.size(); i++)
          if (layout_.tensors[i].layer == l) tensor_steps_[i] = 0;
      }
    mask_ = mask;
    grad_targets_.embedding = plan_.as<float>(i_grad_embedding_);
    grad_targets_.final_norm = plan_.as<float>(i_grad_final_norm_);
    grad_targets_.lm_head = i_grad_head_ >= 0 ? plan_.as<float>(i_grad_head_) : nullptr;
    grad_targets_.layer.assign(c.n_layers, nullptr);
    for (int l = 0; l < c.n_layers; l++)
      if (slot_of_layer_[l] >= 0) grad_targets_.layer[l] = slot_grads(slot_of_layer_[l]);
  }

  double forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T, float loss_scale) override {
    (void)T;
    return model_->forward_backward(inputs, targets, B, loss_scale, grad_targets_, mask_);
  }
  double forward_loss(const int32_t* inputs, const int32_t* targets, int B, int T, int64_t* kept) override {
    (void)T;
    return model_->forward_loss(inputs, targets, B, kept);
  }

  double grad_sum_squares() override {
    const cudaStream_t s = model_->stream();
    float* total = plan_.as<float>(i_scratch_);
    float* scratch = total + 1;
    bool first = true;
    for_each_trained([&](const TensorSlot& t, size_t, const float* grad, int64_t) {
      sum_squares(total, scratch, grad, t.numel(), !first, s);
      first = false;
    });
    float host = 0;
    CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return first ? 0.0 : (double)host;
  }

  void optimizer_step(float lr, float clip_scale) override {
    const cudaStream_t s = model_->stream();
    NvtxRange range("optimizer");
    bf16* weights = static_cast<bf16*>(model_->weights_device());
    for_each_trained([&](const TensorSlot& t, size_t index, const float* grad, int64_t moment_offset) {
      const int step = ++tensor_steps_[index];
      const float wd = t.is_matrix() ? options_.weight_decay : 0.0f;
      const uint32_t seed = (uint32_t)(options_.seed * 2654435761u) ^ (uint32_t)(index * 0x9E3779B9u);
      if (options_.moments == "fp32") {
        float* m = plan_.as<float>(moment_block(t)) + moment_offset;
        adamw_update(weights + t.offset, m, m + moment_stride(t), (float*)nullptr, grad, t.numel(), lr, options_.beta1,
                     options_.beta2, options_.eps, wd, step, clip_scale, nullptr, seed, s);
      } else {
        bf16* m = plan_.as<bf16>(moment_block(t)) + moment_offset;
        adamw_update(weights + t.offset, m, m + moment_stride(t), (float*)nullptr, grad, t.numel(), lr, options_.beta1,
                     options_.beta2, options_.eps, wd, step, clip_scale, nullptr, seed, s);
      }
    });
    // Clear the gradients of what trains (the rest are untouched zeros).
    CUDA_CHECK(cudaMemsetAsync(plan_.ptr(i_grad_embedding_), 0, plan_.bytes(Arena::Gradients), s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void read_weights(std::vector<float>& out) override {
    out.resize(layout_.total);
    model_->download_weights(out.data());
  }

  // State: weights (bf16 values, exact in fp32), the Adam moments and step count of every tensor
  // that trains now. load_state expects set_mask to have been called with the saved mask.
  void save_state(StateBundle& out) override {
    read_weights(out.tensors["weights"]);
    nlohmann::json steps = nlohmann::json::object();
    for_each_trained([&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      out.tensors["adam." + t.name + ".m"] = read_moments(t, offset);
      out.tensors["adam." + t.name + ".v"] = read_moments(t, offset + moment_stride(t));
      steps[t.name] = tensor_steps_[index];
    });
    out.meta["adam.steps"] = steps;
  }

  void load_state(const StateBundle& in) override {
    const std::vector<float>& w = in.tensors.at("weights");
    OWLORE_REQUIRE((int64_t)w.size() == layout_.total, "trainer state: ", w.size(), " weights, the model has ",
                   layout_.total);
    model_->upload_weights(w.data());
    const auto& steps = in.meta.at("adam.steps");
    for_each_trained([&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      OWLORE_REQUIRE(steps.contains(t.name), "trainer state has no optimizer state for ", t.name);
      write_moments(t, offset, in.tensors.at("adam." + t.name + ".m"));
      write_moments(t, offset + moment_stride(t), in.tensors.at("adam." + t.name + ".v"));
      tensor_steps_[index] = steps[t.name].get<int>();
    });
    CUDA_CHECK(cudaStreamSynchronize(model_->stream()));
  }

  MemoryReport memory() override {
    size_t free_bytes = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    const double used = (double)(total - free_bytes);
    peak_ = std::max(peak_, used);
    return {used, peak_};
  }

 private:
  float* slot_grads(int slot) const {
    return plan_.as<float>(i_slot_grads_) + (int64_t)slot * layout_.config.layer_params();
  }
  void reset_slot(int slot) {
    const cudaStream_t s = model_->stream();
    const int64_t n = layout_.config.layer_params();
    const size_t moment_bytes = options_.moments == "fp32" ? 4 : 2;
    CUDA_CHECK(cudaMemsetAsync(slot_grads(slot), 0, n * 4, s));
    char* moments = static_cast<char*>(plan_.ptr(i_moments_slots_)) + (size_t)slot * 2 * n * moment_bytes;
    CUDA_CHECK(cudaMemsetAsync(moments, 0, 2 * n * moment_bytes, s));
  }
  // One moment array of tensor t (element offset inside its block) to and from host floats.
  std::vector<float> read_moments(const TensorSlot& t, int64_t offset) {
    std::vector<float> out(t.numel());
    const cudaStream_t s = model_->stream();
    if (options_.moments == "fp32") {
      CUDA_CHECK(cudaMemcpyAsync(out.data(), plan_.as<float>(moment_block(t)) + offset, t.numel() * 4,
                                 cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
    } else {
      std::vector<uint16_t> raw(t.numel());
      CUDA_CHECK(cudaMemcpyAsync(raw.data(), plan_.as<uint16_t>(moment_block(t)) + offset, t.numel() * 2,
                                 cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      for (int64_t i = 0; i < t.numel(); i++) {
        const uint32_t bits = (uint32_t)raw[i] << 16;
        std::memcpy(&out[i], &bits, 4);
      }
    }
    return out;
  }
  void write_moments(const TensorSlot& t, int64_t offset, const std::vector<float>& values) {
    OWLORE_REQUIRE((int64_t)values.size() == t.numel(), "trainer state: moments of ", t.name, " have ", values.size(),
                   " values, expected ", t.numel());
    const cudaStream_t s = model_->stream();
    if (options_.moments == "fp32") {
      CUDA_CHECK(cudaMemcpyAsync(plan_.as<float>(moment_block(t)) + offset, values.data(), t.numel() * 4,
                                 cudaMemcpyHostToDevice, s));
    } else {  // the values are bf16 already: take the upper half of each float
      std::vector<uint16_t> raw(t.numel());
      for (int64_t i = 0; i < t.numel(); i++) {
        uint32_t bits;
        std::memcpy(&bits, &values[i], 4);
        raw[i] = (uint16_t)(bits >> 16);
      }
      CUDA_CHECK(cudaMemcpyAsync(plan_.as<uint16_t>(moment_block(t)) + offset, raw.data(), t.numel() * 2,
                                 cudaMemcpyHostToDevice, s));
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  // The plan entry holding tensor t's moments, the offset of its m (in elements) inside that
  // entry, and the distance from m to v.
  int moment_block(const TensorSlot& t) const { return t.layer < 0 ? i_moments_global_ : i_moments_slots_; }
  int64_t moment_stride(const TensorSlot& t) const {
    return t.layer < 0 ? global_params_ : layout_.config.layer_params();
  }

  // Calls fn(tensor, index, gradient, moment offset) for every trained tensor.
  template <typename Fn>
  void for_each_trained(Fn fn) {
    const ModelConfig& c = layout_.config;
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const TensorSlot& t = layout_.tensors[i];
      if (!tensor_trains(layout_, t, mask_)) continue;
      if (t.layer >= 0) {
        const int slot = slot_of_layer_[t.layer];
        const LayerOffsets& p = layout_.layers[t.layer];
        const int64_t within = t.offset - p.begin;
        fn(t, i, slot_grads(slot) + within, (int64_t)slot * 2 * c.layer_params() + within);
      } else {
        const float* grad = t.offset == layout_.embedding   ? plan_.as<float>(i_grad_embedding_)
                            : t.offset == layout_.final_norm ? plan_.as<float>(i_grad_final_norm_)
                                                             : plan_.as<float>(i_grad_head_);
        fn(t, i, grad, global_offset_.at(t.offset));
      }
    }
  }

  const ModelLayout& layout_;
  OptimizerOptions options_;
  int n_slots_;
  MemoryPlan plan_;
  std::unique_ptr<GpuModel> model_;
  int i_grad_embedding_ = -1, i_grad_final_norm_ = -1, i_grad_head_ = -1, i_slot_grads_ = -1;
  int i_moments_global_ = -1, i_moments_slots_ = -1, i_scratch_ = -1;
  std::map<int64_t, int64_t> global_offset_;
  int64_t global_params_ = 0;
  std::vector<int> slot_of_layer_, layer_of_slot_;
  std::vector<int> tensor_steps_;
  TrainMask mask_;
  GradTargets grad_targets_;
  double peak_ = 0;
};

}  // namespace

std::unique_ptr<TrainBackend> make_gpu_backend(const ModelLayout& layout, const std::vector<float>& weights,
                                               const OptimizerOptions& options, int max_batch, int seq,
                                               int n_layer_slots, int lm_head_chunk_tokens) {
  return std::make_unique<GpuBackend>(layout, weights, options, max_batch, seq, n_layer_slots, lm_head_chunk_tokens);
}

}  // namespace owlore
