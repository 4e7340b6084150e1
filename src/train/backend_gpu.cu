// The GPU backend: GpuModel plus full-rank AdamW on bf16 weights (stochastic rounding) with
// fp32 or bf16 moments, for every tensor that trains. Decoder layers train in slots: a fixed
// number of (gradient, moments) slots allocated once at start; when the trained set changes, a
// layer that stays keeps its slot, a new layer takes a free slot with fresh (zeroed) state, and
// nothing is allocated or freed (DESIGN.md §2).
// With OptimizerOptions::galore (owlore, galore) the 2-D matrices of trained decoder layers step
// with GaLore-Adam (optim/galore_gpu: projector, low-rank moments and step per (slot, matrix), in
// memory allocated once for the slots); their norms and the global tensors keep AdamW. A layer
// joining a slot starts fresh: no projector, zero moments, step 0 (as the CPU backend).
// Gradients under GaLore (DESIGN.md §2, "no gradient buffers"): by default a slot keeps no full
// gradient. Each trained matrix's dW is written by the backward into the model's workspace for
// one matrix (under --recompute layer, recompute buffers that are free at that moment) and
// consumed there at once: its squared norm is added to the clip
// norm, the projector is refreshed from it when due, and it is projected into the slot's R (fp32,
// R's shape, small). The optimizer step scales R by the clip factor (projection is linear, so this
// equals projecting the clipped gradient), runs Adam on it and back-projects through the same
// workspace. With several micro-batches per step the clip norm would need the norm of the summed
// gradient, so there (stream_galore_gradients = false) the slots keep full fp32 gradients and
// GaLore reads them in the optimizer step, as the CPU twin does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "base/format.h"
#include "base/bf16.h"
#include "base/error.h"
#include "kernels/adamw.cuh"
#include "model/model_gpu.h"
#include "optim/adamw_cpu.h"
#include "optim/galore_gpu.h"
#include "optim/optimizer_state.h"
#include "train/backend.h"

namespace owlore {

namespace {

class GpuBackend final : public TrainBackend {
 public:
  GpuBackend(const ModelLayout& layout, const std::vector<float>& weights, const OptimizerOptions& o,
             const GpuModelOptions& model_options, int n_slots)
      : layout_(layout),
        options_(o),
        n_slots_(std::min(n_slots, layout.config.n_layers)),
        streaming_(o.galore && o.stream_galore_gradients) {
    OWLORE_REQUIRE(cuda_available(), "--device cuda: no CUDA device is present (use --device cpu)");
    const ModelConfig& c = layout.config;
    GpuModelOptions planned = model_options;
    planned.stream_matrix_gradients = streaming_;
    model_ = std::make_unique<GpuModel>(layout, planned, plan_);
    const int64_t V = c.vocab, C = c.d_model;
    const size_t moment_bytes = o.moments == MomentsDtype::fp32 ? 4 : 2;
    const int64_t layer_params = c.layer_params();
    // Full-rank slot moments cover the whole layer, or under GaLore only its two norms.
    slot_moment_params_ = o.galore ? 2 * C : layer_params;
    // Global tensors (embedding, final norm, untied head) train for the whole run, or never
    // (--freeze-embeddings: no gradient, no moments).
    // An untied embedding's gradient lives only in the rows of the step's tokens (sparse: at most
    // micro-batches x tokens rows, with a token-to-row map), a tied one's everywhere (the head's
    // gradient fills every row).
    const int64_t step_tokens =
        (int64_t)std::max(1, o.micro_batches_per_step) * model_options.max_batch * model_options.seq;
    if (o.train_embeddings && !c.tied_embeddings && step_tokens < V) {  // else as many rows as the vocabulary: dense
      sparse_embedding_rows_ = step_tokens;
      i_grad_embedding_ = plan_.add(Arena::Gradients, "embedding (rows of the step's tokens)",
                                    sparse_embedding_rows_ * C * 4, "fp32");
      i_embedding_row_of_ = plan_.add(Arena::Gradients, "embedding row map", (V + 1) * 4, "int32");
    }
    if (o.train_embeddings) {
      if (i_grad_embedding_ < 0) i_grad_embedding_ = plan_.add(Arena::Gradients, "embedding", V * C * 4, "fp32");
      i_grad_final_norm_ = plan_.add(Arena::Gradients, "final norm", C * 4, "fp32");
      if (!c.tied_embeddings) i_grad_head_ = plan_.add(Arena::Gradients, "lm head", V * C * 4, "fp32");
    }
    // A slot's gradient: the whole layer, or with streamed GaLore gradients its two norms only.
    slot_grad_floats_ = streaming_ ? 2 * C : layer_params;
    i_slot_grads_ = plan_.add(Arena::Gradients,
                              std::to_string(n_slots_) + (streaming_ ? " layer slots (norms; matrices streamed)" : " layer slots"),
                              n_slots_ * slot_grad_floats_ * 4, "fp32");
    const int64_t global_params = o.train_embeddings ? V * C * (c.tied_embeddings ? 1 : 2) + C : 0;
    if (global_params > 0)
      i_moments_global_ = plan_.add(Arena::OptimizerState, "Adam m, v (embedding, head, norm)",
                                    2 * global_params * moment_bytes, name(o.moments));
    i_moments_slots_ = plan_.add(Arena::OptimizerState,
                                 std::string(o.galore ? "Adam m, v (norms of " : "Adam m, v (") +
                                     std::to_string(n_slots_) + " layer slots)",
                                 2 * n_slots_ * slot_moment_params_ * moment_bytes, name(o.moments));
    if (o.galore) plan_galore(layout);
    i_scratch_ = plan_.add(Arena::Workspace, "norm scratch", (sum_squares_scratch_floats() + 1) * 4, "fp32");
    plan_.allocate();
    model_->bind(plan_);
    if (o.galore) bind_galore();
    model_->upload_weights(weights.data());
    const cudaStream_t s = model_->stream();
    // Gradients and moments start at zero; after this, only slot resets touch them.
    clear_gradients();
    CUDA_CHECK(cudaMemsetAsync(plan_.base(Arena::OptimizerState), 0, plan_.bytes(Arena::OptimizerState), s));
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
    set_mask(TrainMask{std::vector<bool>(c.n_layers, false), o.train_embeddings, o.train_embeddings}, false);
  }

  std::string device_name() const override { return cuda_device_name(); }
  std::string plan_table() const override {
    const size_t pinned = model_->pinned_host_bytes();
    return plan_.table() + (pinned ? "  host (pinned)    " + format_bytes((double)pinned) + "  offloaded layer inputs\n" : "");
  }

  void set_mask(const TrainMask& mask, bool resample) override {
    const ModelConfig& c = layout_.config;
    int wanted = 0;
    for (bool b : mask.layers) wanted += b;
    OWLORE_REQUIRE(wanted <= n_slots_, "asked to train ", wanted, " decoder layers with ", n_slots_, " slots");
    const bool reset_all = resample && options_.state_policy == StatePolicy::reset;
    // Layers leaving the set free their slot; under "keep" their state is parked in host memory
    // first; under "reset" at a re-sampling every layer leaves (and the active ones rejoin fresh).
    for (int l = 0; l < c.n_layers; l++)
      if (slot_of_layer_[l] >= 0 && (!mask.layers[l] || reset_all)) {
        if (options_.state_policy == StatePolicy::keep) parked_[l] = export_layer(l);
        layer_of_slot_[slot_of_layer_[l]] = -1;
        slot_of_layer_[l] = -1;
      }
    // Joining layers take a free slot with zeroed gradient and moments and step counts from 1,
    // or, under "keep", the state they left with.
    for (int l = 0; l < c.n_layers; l++)
      if (mask.layers[l] && slot_of_layer_[l] < 0) {
        const int slot = (int)(std::find(layer_of_slot_.begin(), layer_of_slot_.end(), -1) - layer_of_slot_.begin());
        slot_of_layer_[l] = slot;
        layer_of_slot_[slot] = l;
        reset_slot(slot);  // full-rank moments and GaLore state of the slot
        for (size_t i = 0; i < layout_.tensors.size(); i++)
          if (layout_.tensors[i].layer == l) tensor_steps_[i] = 0;
        const auto parked = parked_.find(l);
        if (parked != parked_.end()) {
          import_layer(l, parked->second);
          parked_.erase(parked);
        }
      }
    mask_ = mask;
    OWLORE_REQUIRE(options_.train_embeddings || (!mask.embedding && !mask.head),
                   "the embedding or head is asked to train, but the backend was built with them frozen");
    auto grad_or_null = [&](int index) { return index >= 0 ? plan_.as<float>(index) : nullptr; };
    if (i_embedding_row_of_ >= 0) {
      grad_targets_.embedding_rows = grad_or_null(i_grad_embedding_);
      grad_targets_.embedding_row_of = plan_.as<int>(i_embedding_row_of_);
      grad_targets_.embedding_row_capacity = (int)sparse_embedding_rows_;
    } else {
      grad_targets_.embedding = grad_or_null(i_grad_embedding_);
    }
    grad_targets_.final_norm = grad_or_null(i_grad_final_norm_);
    grad_targets_.lm_head = grad_or_null(i_grad_head_);
    grad_targets_.layer.assign(c.n_layers, nullptr);
    grad_targets_.layer_norms.assign(c.n_layers, nullptr);
    for (int l = 0; l < c.n_layers; l++)
      if (slot_of_layer_[l] >= 0) (streaming_ ? grad_targets_.layer_norms : grad_targets_.layer)[l] = slot_grads(slot_of_layer_[l]);
    if (streaming_)
      grad_targets_.consume = [this](int layer, int64_t offset, int64_t numel, const float* gradient) {
        consume_matrices(layer, offset, numel, gradient);
      };
  }

  double forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T, float loss_scale) override {
    (void)T;
    // A refresh factorizes the gradient of the micro-batch it sees, and the clip norm adds the
    // squared norms of what streams through: both exact for one micro-batch per step only.
    OWLORE_REQUIRE(!streaming_ || micro_batches_since_step_ == 0,
                   "streamed GaLore gradients take one micro-batch per optimizer step (--grad-accum 1)");
    // The sparse embedding gradient has rows for the planned micro-batches' tokens only.
    OWLORE_REQUIRE(i_embedding_row_of_ < 0 || micro_batches_since_step_ < std::max(1, options_.micro_batches_per_step),
                   "more micro-batches in one step than planned (OptimizerOptions::micro_batches_per_step = ",
                   options_.micro_batches_per_step, ")");
    micro_batches_since_step_++;
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
    if (streaming_) {  // the streamed matrices were measured during the backward
      CUDA_CHECK(cudaMemcpyAsync(total, streamed_sum_squares(), sizeof(float), cudaMemcpyDeviceToDevice, s));
      first = false;
    }
    for_each_trained([&](const TensorSlot& t, size_t, const float* grad, int64_t) {
      if (streaming_ && is_galore(t)) return;
      // A sparse embedding gradient's unused rows are zero: summing all of them adds nothing.
      sum_squares(total, scratch, grad, sparse_embedding(t) ? sparse_embedding_rows_ * t.cols : t.numel(), !first, s);
      first = false;
    });
    float host = 0;
    int embedding_rows_used = 0;
    CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof(float), cudaMemcpyDeviceToHost, s));
    if (i_embedding_row_of_ >= 0)
      CUDA_CHECK(cudaMemcpyAsync(&embedding_rows_used, plan_.as<int>(i_embedding_row_of_) + layout_.config.vocab,
                                 sizeof(int), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    OWLORE_REQUIRE(embedding_rows_used <= sparse_embedding_rows_, "the sparse embedding gradient needed ",
                   embedding_rows_used, " rows of the ", sparse_embedding_rows_, " planned (a bug: it plans one per token)");
    return first ? 0.0 : (double)host;
  }

  void optimizer_step(float lr, float clip_scale) override {
    const cudaStream_t s = model_->stream();
    NvtxRange range("optimizer");
    // Streamed refreshes happened during the backward; buffered ones happen below.
    projector_report_ = streamed_report_;
    streamed_report_ = ProjectorReport{};
    bf16* weights = static_cast<bf16*>(model_->weights_device());
    for_each_trained([&](const TensorSlot& t, size_t index, const float* grad, int64_t moment_offset) {
      const uint32_t seed = (uint32_t)(options_.seed * 2654435761u) ^ (uint32_t)(index * 0x9E3779B9u);
      if (is_galore(t)) {
        GaloreGpuMatrix& state = galore_state(t, index);
        if (streaming_) {  // R was projected during the backward; the model's matrix workspace serves as U
          galore_->apply_projected(weights + t.offset, model_->matrix_workspace(), projected(t, index), clip_scale,
                                   state, lr, seed);
          return;
        }
        // The slot's gradient buffer is ours and is cleared below: GaLore reuses it for U.
        Rng rng = refresh_rng(options_.seed, index, state.refreshes);
        const double energy = galore_->step(weights + t.offset, const_cast<float*>(grad), state, lr, clip_scale, seed, rng);
        if (energy >= 0) projector_report_.add(energy);
        return;
      }
      const int step = ++tensor_steps_[index];
      const float wd = t.is_matrix() ? options_.weight_decay : 0.0f;
      auto update = [&](auto* m) {
        if (sparse_embedding(t))
          adamw_update_rows(weights + t.offset, m, m + moment_stride(t), (float*)nullptr, grad,
                            plan_.as<int>(i_embedding_row_of_), (int)t.cols, t.numel(), lr, options_.beta1,
                            options_.beta2, options_.eps, wd, step, clip_scale, nullptr, seed, s);
        else
          adamw_update(weights + t.offset, m, m + moment_stride(t), (float*)nullptr, grad, t.numel(), lr,
                       options_.beta1, options_.beta2, options_.eps, wd, step, clip_scale, nullptr, seed, s);
      };
      if (options_.moments == MomentsDtype::fp32)
        update(plan_.as<float>(moment_block(t)) + moment_offset);
      else
        update(plan_.as<bf16>(moment_block(t)) + moment_offset);
    });
    // Clear the gradients (and R) of what trains (the rest are untouched zeros).
    clear_gradients();
    CUDA_CHECK(cudaStreamSynchronize(s));
    micro_batches_since_step_ = 0;
  }

  void read_weights(std::vector<float>& out) override {
    out.resize(layout_.total);
    model_->download_weights(out.data());
  }

  // State (optim/optimizer_state.h): weights (bf16 values, exact in fp32), the optimizer state of
  // every tensor that trains now and, under --state keep, of the layers parked in host memory.
  void save_state(StateBundle& out) override {
    read_weights(out.tensors["weights"]);
    begin_optimizer_state(out);
    for_each_trained([&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      save_tensor_state(out, t, index, offset);
    });
    for (const auto& [layer, parked] : parked_) {
      (void)layer;
      for (const auto& [name, values] : parked.tensors) out.tensors[name] = values;
      out.meta["adam.steps"].update(parked.meta.at("adam.steps"));
      out.meta["galore"].update(parked.meta.at("galore"));
    }
  }

  // Expects set_mask with the saved mask first. Every tensor is checked (StateReader); the state
  // of a layer that does not train now goes back to the host park under --state keep and is an
  // error otherwise.
  void load_state(StateReader& in) override {
    model_->upload_weights(in.tensor("weights", layout_.total).data());
    std::vector<std::string> handled_adam, handled_galore;
    for_each_trained([&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      load_tensor_state(in, t, index, offset);
      (is_galore(t) ? handled_galore : handled_adam).push_back(t.name);
    });
    parked_.clear();
    if (options_.state_policy == StatePolicy::keep)
      for (const TensorSlot& t : layout_.tensors) {
        if (t.layer < 0 || slot_of_layer_[t.layer] >= 0) continue;
        const bool galore = is_galore(t);
        if (galore ? !has_galore_state(in, t.name) : !has_adam_state(in, t.name)) continue;
        StateBundle& parked = parked_[t.layer];
        if (galore) {
          add_galore_state(parked, t.name, read_galore_state(in, t, owlore::galore_state((int)t.rows, (int)t.cols, galore_config_)));
          handled_galore.push_back(t.name);
        } else {
          add_adam_state(parked, t.name, read_adam_state(in, t));
          handled_adam.push_back(t.name);
        }
      }
    check_optimizer_state_names(in, handled_adam, handled_galore);
    CUDA_CHECK(cudaStreamSynchronize(model_->stream()));
  }

  ProjectorReport projector_report() const override { return projector_report_; }

  MemoryReport memory() override {
    size_t free_bytes = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    const double used = (double)(total - free_bytes);
    peak_ = std::max(peak_, used);
    return {used, peak_};
  }

 private:
  bool sparse_embedding(const TensorSlot& t) const { return i_embedding_row_of_ >= 0 && t.offset == layout_.embedding; }
  float* slot_grads(int slot) const { return plan_.as<float>(i_slot_grads_) + (int64_t)slot * slot_grad_floats_; }
  float* streamed_sum_squares() const { return plan_.as<float>(i_streamed_norm_); }
  // Zeroes every gradient (and R, and the streamed sum of squares): the whole gradients arena.
  void clear_gradients() {
    CUDA_CHECK(cudaMemsetAsync(plan_.base(Arena::Gradients), 0, plan_.bytes(Arena::Gradients), model_->stream()));
  }
  void reset_slot(int slot) {
    const cudaStream_t s = model_->stream();
    const size_t moment_bytes = options_.moments == MomentsDtype::fp32 ? 4 : 2;
    CUDA_CHECK(cudaMemsetAsync(slot_grads(slot), 0, slot_grad_floats_ * 4, s));
    char* moments = static_cast<char*>(plan_.ptr(i_moments_slots_)) + (size_t)slot * 2 * slot_moment_params_ * moment_bytes;
    CUDA_CHECK(cudaMemsetAsync(moments, 0, 2 * slot_moment_params_ * moment_bytes, s));
    if (galore_)
      for (int j = 0; j < galore_matrices_per_layer_; j++) galore_gpu_reset(galore_states_[slot * galore_matrices_per_layer_ + j], s);
  }

  // ---- GaLore (owlore, galore) ----
  bool is_galore(const TensorSlot& t) const { return galore_ && t.layer >= 0 && t.is_matrix(); }
  GaloreGpuMatrix& galore_state(const TensorSlot& t, size_t index) {
    return galore_states_[slot_of_layer_[t.layer] * galore_matrices_per_layer_ + matrix_ordinal_[index]];
  }
  // Plans the per-slot GaLore state (projector, m, v of every matrix of a layer; all decoder
  // layers have the same shapes) and the refresh workspace, sized for the largest matrix.
  void plan_galore(const ModelLayout& layout) {
    galore_config_ = options_.galore_config;
    galore_config_.beta1 = options_.beta1, galore_config_.beta2 = options_.beta2, galore_config_.eps = options_.eps;
    galore_config_.weight_decay = options_.weight_decay;
    matrix_ordinal_.assign(layout.tensors.size(), -1);
    std::vector<int> count(layout.config.n_layers, 0);
    for (size_t i = 0; i < layout.tensors.size(); i++) {
      const TensorSlot& t = layout.tensors[i];
      if (t.layer < 0 || !t.is_matrix()) continue;
      matrix_ordinal_[i] = count[t.layer]++;
      if (t.layer == 0) {
        galore_shapes_.push_back({(int)t.rows, (int)t.cols});
        galore_state_offsets_.push_back(galore_slot_floats_);
        galore_slot_floats_ += galore_gpu_state_floats((int)t.rows, (int)t.cols, galore_config_);
        galore_r_offsets_.push_back(galore_slot_r_floats_);
        galore_slot_r_floats_ += galore_gpu_r_floats((int)t.rows, (int)t.cols, galore_config_);
      }
    }
    galore_matrices_per_layer_ = (int)galore_shapes_.size();
    galore_ = std::make_unique<GaloreGpu>(galore_config_, galore_shapes_, model_->stream());
    i_galore_state_ = plan_.add(Arena::OptimizerState,
                                "GaLore projectors, m, v (" + std::to_string(n_slots_) + " slots, rank " +
                                    std::to_string(galore_config_.rank) + ")",
                                (size_t)n_slots_ * galore_slot_floats_ * 4, "fp32");
    if (streaming_) {
      // R of every matrix of every slot and their squared norms' sum (cleared with the gradients).
      // The gradients themselves pass through the model's matrix workspace (it also serves as U in
      // the optimizer step).
      i_projected_ = plan_.add(Arena::Gradients,
                               "GaLore R, projected gradients (" + std::to_string(n_slots_) + " slots)",
                               (size_t)n_slots_ * galore_slot_r_floats_ * 4, "fp32");
      i_streamed_norm_ = plan_.add(Arena::Gradients, "streamed gradients' sum of squares", 4, "fp32");
    }
    i_galore_workspace_ = plan_.add(Arena::Workspace,
                                    std::string("GaLore refresh (") +
                                        (galore_config_.mode == ProjectorMode::exact ? "exact SVD" : "randomized") + ")",
                                    galore_->workspace_bytes(), "fp32");
  }
  void bind_galore() {
    // GaLore reads the gradients the backward writes: one stream for both, or they race.
    OWLORE_REQUIRE(model_->stream() != nullptr && galore_->stream() == model_->stream(),
                   "GaLore (GPU): the optimizer must run on the model's stream");
    galore_->bind(plan_.ptr(i_galore_workspace_), model_->gemm_workspace());
    float* base = plan_.as<float>(i_galore_state_);
    for (int slot = 0; slot < n_slots_; slot++)
      for (int j = 0; j < galore_matrices_per_layer_; j++)
        galore_states_.push_back(galore_gpu_matrix(galore_shapes_[j].first, galore_shapes_[j].second, galore_config_,
                                                   base + slot * galore_slot_floats_ + galore_state_offsets_[j]));
  }
  // R of matrix t (streamed gradients): in its layer's slot.
  float* projected(const TensorSlot& t, size_t index) {
    return plan_.as<float>(i_projected_) + slot_of_layer_[t.layer] * galore_slot_r_floats_ +
           galore_r_offsets_[matrix_ordinal_[index]];
  }
  // The backward's hand-off of one weight-gradient GEMM of layer l (streamed gradients): the
  // matrices in [offset, offset + numel) of the arena lie in span in arena order.
  void consume_matrices(int l, int64_t offset, int64_t numel, const float* span) {
    const cudaStream_t s = model_->stream();
    float* scratch = plan_.as<float>(i_scratch_) + 1;
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const TensorSlot& t = layout_.tensors[i];
      if (t.layer != l || t.offset < offset || t.offset >= offset + numel) continue;
      OWLORE_REQUIRE(is_galore(t), "streamed gradient of ", t.name, ", which GaLore does not train");
      const float* G = span + (t.offset - offset);
      GaloreGpuMatrix& state = galore_state(t, i);
      sum_squares(streamed_sum_squares(), scratch, G, t.numel(), /*accumulate=*/true, s);
      if (galore_->refresh_due(state)) {
        Rng rng = refresh_rng(options_.seed, i, state.refreshes);
        streamed_report_.add(galore_->refresh(state, G, rng));
      }
      galore_->project(projected(t, i), G, state, /*accumulate=*/true);  // R is cleared with the gradients
    }
  }
  std::vector<float> download(const float* device, int64_t n) {
    std::vector<float> host(n);
    const cudaStream_t s = model_->stream();
    CUDA_CHECK(cudaMemcpyAsync(host.data(), device, n * 4, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return host;
  }
  void upload(float* device, const std::vector<float>& host, int64_t n, const std::string& what) {
    OWLORE_REQUIRE((int64_t)host.size() == n, "trainer state: ", what, " has ", host.size(), " values, expected ", n);
    const cudaStream_t s = model_->stream();
    CUDA_CHECK(cudaMemcpyAsync(device, host.data(), n * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  GaloreState download_galore(const GaloreGpuMatrix& st) {
    GaloreState out;
    out.rows = st.rows, out.cols = st.cols, out.rank = st.rank, out.side = st.side;
    if (st.has_projector) out.projector = download(st.projector, st.projector_numel());
    out.m = download(st.m, st.r_numel());
    out.v = download(st.v, st.r_numel());
    out.step = st.step, out.refreshes = st.refreshes, out.captured_energy = st.captured_energy;
    return out;
  }
  void upload_galore(GaloreGpuMatrix& st, const GaloreState& in) {
    galore_gpu_reset(st, model_->stream());
    st.has_projector = !in.projector.empty();
    if (st.has_projector) upload(st.projector, in.projector, st.projector_numel(), "GaLore projector");
    upload(st.m, in.m, st.r_numel(), "GaLore m");
    upload(st.v, in.v, st.r_numel(), "GaLore v");
    st.step = in.step, st.refreshes = in.refreshes, st.captured_energy = in.captured_energy;
  }
  // A fresh state of the matrix's shape, rank and side: what a saved state must match.
  static GaloreState expected_galore(const GaloreGpuMatrix& st) {
    GaloreState s;
    s.rows = st.rows, s.cols = st.cols, s.rank = st.rank, s.side = st.side;
    return s;
  }
  // One moment array of tensor t (element offset inside its block) to and from host floats.
  std::vector<float> read_moments(const TensorSlot& t, int64_t offset) {
    std::vector<float> out(t.numel());
    const cudaStream_t s = model_->stream();
    if (options_.moments == MomentsDtype::fp32) {
      CUDA_CHECK(cudaMemcpyAsync(out.data(), plan_.as<float>(moment_block(t)) + offset, t.numel() * 4,
                                 cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
    } else {
      std::vector<uint16_t> raw(t.numel());
      CUDA_CHECK(cudaMemcpyAsync(raw.data(), plan_.as<uint16_t>(moment_block(t)) + offset, t.numel() * 2,
                                 cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      for (int64_t i = 0; i < t.numel(); i++) out[i] = bf16_to_float(raw[i]);
    }
    return out;
  }
  void write_moments(const TensorSlot& t, int64_t offset, const std::vector<float>& values) {
    OWLORE_REQUIRE((int64_t)values.size() == t.numel(), "trainer state: moments of ", t.name, " have ", values.size(),
                   " values, expected ", t.numel());
    const cudaStream_t s = model_->stream();
    if (options_.moments == MomentsDtype::fp32) {
      CUDA_CHECK(cudaMemcpyAsync(plan_.as<float>(moment_block(t)) + offset, values.data(), t.numel() * 4,
                                 cudaMemcpyHostToDevice, s));
    } else {  // the values are bf16 already: take the upper half of each float
      std::vector<uint16_t> raw(t.numel());
      for (int64_t i = 0; i < t.numel(); i++) raw[i] = bf16_bits_of(values[i]);
      CUDA_CHECK(cudaMemcpyAsync(plan_.as<uint16_t>(moment_block(t)) + offset, raw.data(), t.numel() * 2,
                                 cudaMemcpyHostToDevice, s));
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  // The plan entry holding tensor t's moments, the offset of its m (in elements) inside that
  // entry, and the distance from m to v.
  int moment_block(const TensorSlot& t) const { return t.layer < 0 ? i_moments_global_ : i_moments_slots_; }
  int64_t moment_stride(const TensorSlot& t) const { return t.layer < 0 ? global_params_ : slot_moment_params_; }

  // Layer l's optimizer state (it must hold a slot) as a StateBundle in the save_state format,
  // and back into the slot it holds now: how the "keep" policy parks a layer in host memory.
  StateBundle export_layer(int l) {
    StateBundle out;
    begin_optimizer_state(out);
    for_each_in_layer(l, [&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      save_tensor_state(out, t, index, offset);
    });
    return out;
  }
  void import_layer(int l, const StateBundle& parked) {
    StateReader in(parked, "the host-parked state of layer " + std::to_string(l));
    for_each_in_layer(l, [&](const TensorSlot& t, size_t index, const float*, int64_t offset) {
      load_tensor_state(in, t, index, offset);
    });
    in.finish();
  }
  // One tensor's optimizer state into a bundle in the schema, and back (it must be there).
  void save_tensor_state(StateBundle& out, const TensorSlot& t, size_t index, int64_t offset) {
    if (is_galore(t)) {
      add_galore_state(out, t.name, download_galore(galore_state(t, index)));
      return;
    }
    add_adam_state(out, t.name, {read_moments(t, offset), read_moments(t, offset + moment_stride(t)), tensor_steps_[index]});
  }
  void load_tensor_state(StateReader& in, const TensorSlot& t, size_t index, int64_t offset) {
    const bool galore = is_galore(t);
    OWLORE_REQUIRE(galore ? has_galore_state(in, t.name) : has_adam_state(in, t.name), in.source(), ": no ",
                   galore ? "GaLore" : "Adam", " state for ", t.name, ", which trains at this step");
    if (galore) {
      GaloreGpuMatrix& st = galore_state(t, index);
      upload_galore(st, read_galore_state(in, t, expected_galore(st)));
      return;
    }
    const AdamTensorState s = read_adam_state(in, t);
    write_moments(t, offset, s.m);
    write_moments(t, offset + moment_stride(t), s.v);
    tensor_steps_[index] = s.step;
  }
  // Calls fn(tensor, index, gradient, moment offset) for the tensors of layer l (it holds a slot).
  template <typename Fn>
  void for_each_in_layer(int l, Fn fn) {
    for (size_t i = 0; i < layout_.tensors.size(); i++)
      if (layout_.tensors[i].layer == l) call_with_slot(layout_.tensors[i], i, fn);
  }
  // The gradient and the moment offset of a decoder-layer tensor inside its layer's slot. The
  // moments are laid out like the layer, or under GaLore hold the two norms only (GaLore
  // matrices get no full-rank moments; their offset is unused).
  template <typename Fn>
  void call_with_slot(const TensorSlot& t, size_t index, Fn& fn) {
    const int slot = slot_of_layer_[t.layer];
    const LayerOffsets& p = layout_.layers[t.layer];
    const int64_t within = t.offset - p.begin;
    const int64_t within_moments =
        !options_.galore ? within : t.offset == p.attn_norm ? 0 : t.offset == p.mlp_norm ? layout_.config.d_model : 0;
    // Streamed: the slot holds the norms' gradients only (GaLore matrices have none).
    const float* grad = !streaming_ ? slot_grads(slot) + within
                        : t.is_matrix() ? nullptr
                                        : slot_grads(slot) + (t.offset == p.attn_norm ? 0 : layout_.config.d_model);
    fn(t, index, grad, (int64_t)slot * 2 * slot_moment_params_ + within_moments);
  }

  // Calls fn(tensor, index, gradient, moment offset) for every trained tensor.
  template <typename Fn>
  void for_each_trained(Fn fn) {
    for (size_t i = 0; i < layout_.tensors.size(); i++) {
      const TensorSlot& t = layout_.tensors[i];
      if (!tensor_trains(layout_, t, mask_)) continue;
      if (t.layer >= 0) {
        call_with_slot(t, i, fn);
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
  bool streaming_;                  // GaLore matrices' gradients streamed (no slot gradient buffers)
  int64_t slot_grad_floats_ = 0;    // gradient floats per slot: the layer, or its two norms when streamed
  int64_t slot_moment_params_ = 0;  // full-rank Adam parameters per slot
  MemoryPlan plan_;
  std::unique_ptr<GpuModel> model_;
  int i_grad_embedding_ = -1, i_grad_final_norm_ = -1, i_grad_head_ = -1, i_slot_grads_ = -1;
  int i_embedding_row_of_ = -1;        // the sparse embedding gradient's row map (untied, trained)
  int64_t sparse_embedding_rows_ = 0;  // its rows (0: a dense embedding gradient)
  int micro_batches_since_step_ = 0;  // forward_backward calls since the last optimizer step
  int i_moments_global_ = -1, i_moments_slots_ = -1, i_scratch_ = -1;
  std::map<int64_t, int64_t> global_offset_;
  int64_t global_params_ = 0;
  std::vector<int> slot_of_layer_, layer_of_slot_;
  std::map<int, StateBundle> parked_;  // "keep" policy: state of layers out of the active set
  std::vector<int> tensor_steps_;
  TrainMask mask_;
  GradTargets grad_targets_;
  double peak_ = 0;
  // GaLore: one state per (slot, matrix of the layer), views into plan memory.
  std::unique_ptr<GaloreGpu> galore_;
  GaloreConfig galore_config_;
  std::vector<std::pair<int, int>> galore_shapes_;  // the matrices of a layer, in arena order
  std::vector<int64_t> galore_state_offsets_;       // floats from the slot's start
  int64_t galore_slot_floats_ = 0;
  std::vector<int64_t> galore_r_offsets_;  // streamed: R's floats from the slot's start
  int64_t galore_slot_r_floats_ = 0;
  int galore_matrices_per_layer_ = 0;
  std::vector<int> matrix_ordinal_;  // per layout tensor: which matrix of its layer, or -1
  std::vector<GaloreGpuMatrix> galore_states_;
  int i_galore_state_ = -1, i_galore_workspace_ = -1, i_projected_ = -1, i_streamed_norm_ = -1;
  ProjectorReport projector_report_;  // refreshes of the last optimizer step
  ProjectorReport streamed_report_;   // refreshes during the backward, reported by the next step
};

}  // namespace

std::unique_ptr<TrainBackend> make_gpu_backend(const ModelLayout& layout, const std::vector<float>& weights,
                                               const OptimizerOptions& options, const GpuModelOptions& model,
                                               int n_layer_slots) {
  return std::make_unique<GpuBackend>(layout, weights, options, model, n_layer_slots);
}

}  // namespace owlore
