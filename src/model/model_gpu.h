// The whole LLaMA forward and backward on the GPU (the GPU twin of model_cpu.h), with bf16
// weights in one arena, bf16 activations saved per layer, fp32 norms statistics, the fused
// chunked LM-head cross-entropy, and fp32 weight gradients written only for the tensors that
// train. Host-facing header: no CUDA kernel code, so host C++ can include it.
//
// Per layer (DESIGN.md §1), x the bf16 residual stream:
//   ln1 = rmsnorm(x) ; qkv = rope(ln1 Wqkv^T) ; att = flash_attention(qkv) ; x_mid = x + att Wo^T
//   ln2 = rmsnorm(x_mid) ; h = swiglu(ln2 Wgate_up^T) ; x_next = x_mid + h Wdown^T
// Each residual add is fused into the RMSNorm that follows it.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "base/choices.h"
#include "model/layout.h"
#include "model/memory_plan.h"
#include "model/train_mask.h"

namespace owlore {

// Where the backward writes (+=) fp32 weight gradients. nullptr = frozen: no weight-gradient
// GEMM. layer[l] points at a buffer laid out like layer l's span of the weight arena.
struct GradTargets {
  float* embedding = nullptr;   // (V,C); receives the tied head's gradient too
  // An untied embedding's gradient in sparse form instead (encoder_backward_rows): the rows of
  // the step's tokens, and the map from a token to 1 + its row (0: none; entry V counts the rows).
  // The caller clears both between steps and plans rows for every token of a step.
  float* embedding_rows = nullptr;   // (embedding_row_capacity, C) +=
  int* embedding_row_of = nullptr;   // (V + 1)
  int embedding_row_capacity = 0;
  float* final_norm = nullptr;  // (C)
  float* lm_head = nullptr;     // (V,C) untied head
  std::vector<float*> layer;    // per decoder layer, (layer_params) or nullptr
  // Streamed matrix gradients (GaLore without gradient buffers, DESIGN.md §2). When consume is
  // set, each trained matrix's weight gradient is written (=) into a workspace the model planned
  // (GpuModelOptions::stream_matrix_gradients), one matrix at a time, and consume(layer, arena
  // offset, numel, gradient) is called right after its GEMM, before the workspace is reused (in
  // stream order: consume enqueues its reads on stream()). No layer[l] is needed; the layer's two
  // norm gradients (+=) go to layer_norms[l] (2C: attention norm, then MLP norm).
  std::vector<float*> layer_norms;  // per decoder layer, (2C) or nullptr
  std::function<void(int layer, int64_t offset, int64_t numel, const float* gradient /*(numel)*/)> consume;
};

// What the forward keeps for the backward. none: every activation below, per layer. cheap: the
// RMSNorm outputs (ln1, ln2) and the SwiGLU output are not kept but recomputed in the backward
// from x, x_mid and gate_up (one norm or one elementwise pass each: ~5% more time, (2C + F)·2
// bytes less per token and layer). layer: only each layer's input x is kept; the backward
// reruns the layer's forward into one shared set of buffers (about one more forward in time).
enum class Recompute { none, cheap, layer };
inline constexpr ChoiceTable<Recompute, 3> kRecomputeChoices{
    {{"none", Recompute::none}, {"cheap", Recompute::cheap}, {"layer", Recompute::layer}}};
inline const char* name(Recompute r) { return choice_name(kRecomputeChoices, r); }

// Floats of the streamed-gradient workspace: the largest matrix of a layer (q·C, kv·C, F·C).
int64_t streamed_gradient_floats(const ModelConfig& config);

// Gradient targets laid out like the weight arena (grads has layout.total floats): every tensor
// gets a gradient; the tied head's goes to the embedding's.
GradTargets arena_grad_targets(const ModelLayout& layout, float* grads);

struct GpuModelOptions {
  int max_batch = 1;                    // sequences per micro-batch
  int seq = 1;                          // tokens per sequence
  int lm_head_chunk_tokens = 2048;      // rows of logits alive at once in the fused LM head
  Recompute recompute = Recompute::none;
  // Recompute::layer only: the layer inputs live in pinned host memory, not on the GPU. The
  // forward copies each one out as it is written (a second stream, behind the next layer's
  // compute); the backward fetches layer l-1's input while layer l runs. Two input buffers stay
  // on the GPU instead of n_layers; the copies (N·C·2 bytes per layer each way) hide behind the
  // layers' GEMMs when the host link moves them faster than a layer computes.
  bool offload_layer_inputs = false;
  // The caller streams the decoder matrices' weight gradients (GradTargets::consume): the model
  // plans their workspace, inside the recompute buffers under Recompute::layer when they are
  // large enough (trained layers then recompute their attention once more, after their MLP's
  // backward), else a buffer of its own. matrix_workspace() is that space.
  bool stream_matrix_gradients = false;
};

class GpuModel {
 public:
  // Registers its buffers in `plan` (weights, activations, workspace) and creates stream(). Call
  // bind() after plan.allocate().
  GpuModel(const ModelLayout& layout, const GpuModelOptions& options, MemoryPlan& plan);
  ~GpuModel();
  GpuModel(const GpuModel&) = delete;
  GpuModel& operator=(const GpuModel&) = delete;
  void bind(const MemoryPlan& plan);

  void upload_weights(const float* host /*(layout.total)*/);
  void download_weights(float* host /*(layout.total)*/) const;
  void* weights_device();  // bf16 (layout.total)
  // With stream_matrix_gradients: streamed_gradient_floats(config) floats of device scratch, free
  // outside forward_backward and forward_loss (the GaLore optimizer step's back-projection).
  float* matrix_workspace();
  // The cuBLASLt workspace of the model's GEMMs (CachedGemm::kWorkspaceBytes, in the plan): other
  // GEMMs ordered on stream() may share it (GaLore's).
  void* gemm_workspace();

  // One training micro-batch: forward, loss, backward. Gradients (scaled by loss_scale) add
  // into grads; returns the summed loss over kept targets (synchronizes to read it).
  double forward_backward(const int32_t* inputs /*(B,T) host*/, const int32_t* targets /*(B,T) host*/, int B,
                          float loss_scale, const GradTargets& grads, const TrainMask& mask);
  // Loss only (evaluation). *kept receives the number of kept targets.
  double forward_loss(const int32_t* inputs, const int32_t* targets, int B, int64_t* kept);

  // Outlier calibration (DESIGN.md §1): after a forward of B sequences, adds Σ_rows x_j² of every
  // decoder layer's matrix inputs (B·seq rows) into fp32 device buffers, one per layer (+=):
  // qkv[l] (C) from ln1, o[l] (q_dim) from the attention output, gate_up[l] (C) from ln2,
  // down[l] (ffn) from the SwiGLU output. Deterministic; enqueued on stream(), no sync.
  // B must be the batch of the last forward. Uses the backward's scratch, free between calls.
  void accumulate_input_energy(const std::vector<float*>& qkv, const std::vector<float*>& o,
                               const std::vector<float*>& gate_up, const std::vector<float*>& down, int B);

  // Per-token losses of the last forward (fp32, 0 where the target is ignored), B*T of them.
  const std::vector<float>& last_token_losses() const;

  cudaStream_t stream() const;
  const ModelLayout& layout() const { return layout_; }
  // Pinned host memory held for offloaded layer inputs (0 without offload_layer_inputs).
  size_t pinned_host_bytes() const;

  struct Impl;

 private:
  const ModelLayout& layout_;
  std::unique_ptr<Impl> impl_;
};

// Why the GPU model cannot run this config (empty: it can).
std::string gpu_unsupported_reason(const ModelConfig& config);
// Whether a CUDA device is present; name of device 0.
bool cuda_available();
std::string cuda_device_name();

}  // namespace owlore
