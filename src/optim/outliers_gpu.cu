// GPU calibration for the layerwise outlier distribution (DESIGN.md §1): GpuModel forwards,
// device energy accumulation, device scoring. See optim/outliers_gpu.h.
#include "optim/outliers_gpu.h"

#include <algorithm>
#include <string>

#include "base/error.h"
#include "kernels/outliers.cuh"
#include "model/memory_plan.h"
#include "model/model_gpu.h"

namespace owlore {

std::vector<double> compute_outlier_distribution_gpu(const ModelLayout& layout, const std::vector<float>& weights,
                                                     const int32_t* tokens, int n_sequences, int seq_len,
                                                     const OutlierOptions& options) {
  const ModelConfig& c = layout.config;
  check_outlier_calibration(n_sequences, seq_len, options);
  OWLORE_REQUIRE((int64_t)weights.size() == layout.total, "outlier calibration: ", weights.size(),
                 " weights, the layout of '", c.name, "' has ", layout.total);
  OWLORE_REQUIRE(cuda_available(), "outlier calibration on cuda: no CUDA device is present (use --device cpu)");
  const int batch = std::min(options.batch_sequences, n_sequences);

  MemoryPlan plan;
  GpuModel model(layout, GpuModelOptions{batch, seq_len, 2048}, plan);
  // Energies: per layer qkv (C), o (q_dim), gate_up (C), down (ffn), back to back.
  const int64_t per_layer = 2 * (int64_t)c.d_model + c.q_dim() + c.ffn;
  const int i_energy = plan.add(Arena::Workspace, "outlier input energies", c.n_layers * per_layer * sizeof(float), "fp32");
  const int i_score = plan.add(Arena::Workspace, "outlier scoring", outlier_ratio_workspace_bytes(), "fp64");
  const int i_ratio = plan.add(Arena::Workspace, "outlier ratios", c.n_layers * sizeof(double), "fp64");
  plan.allocate();
  model.bind(plan);
  model.upload_weights(weights.data());
  const cudaStream_t stream = model.stream();

  float* energy = plan.as<float>(i_energy);
  CUDA_CHECK(cudaMemsetAsync(energy, 0, c.n_layers * per_layer * sizeof(float), stream));
  std::vector<float*> qkv(c.n_layers), o(c.n_layers), gate_up(c.n_layers), down(c.n_layers);
  for (int l = 0; l < c.n_layers; l++) {
    float* base = energy + l * per_layer;
    qkv[l] = base;
    o[l] = qkv[l] + c.d_model;
    gate_up[l] = o[l] + c.q_dim();
    down[l] = gate_up[l] + c.d_model;
  }

  // Only the activations matter: targets of -1 leave the LM head's loss out.
  const std::vector<int32_t> no_targets((int64_t)batch * seq_len, -1);
  for (int first = 0; first < n_sequences; first += batch) {
    const int B = std::min(batch, n_sequences - first);
    int64_t kept = 0;
    model.forward_loss(tokens + (int64_t)first * seq_len, no_targets.data(), B, &kept);
    model.accumulate_input_energy(qkv, o, gate_up, down, B);
    if (options.progress) {
      CUDA_CHECK(cudaStreamSynchronize(stream));  // report what is done, not what is queued
      options.progress(first + B, n_sequences);
    }
  }

  // Scoring: the fused qkv and gate_up blocks are the 7 HF matrices back to back with shared
  // inputs (optim/outliers.cpp, layer_outlier_ratio, scores the same 4 blocks).
  const bf16* w = static_cast<const bf16*>(model.weights_device());
  double* ratios = plan.as<double>(i_ratio);
  for (int l = 0; l < c.n_layers; l++) {
    const LayerOffsets& p = layout.layers[l];
    const OutlierMatrix matrices[4] = {
        {w + p.wqkv, qkv[l], (int64_t)c.q_dim() + 2 * c.kv_dim(), c.d_model},
        {w + p.wo, o[l], (int64_t)c.d_model, c.q_dim()},
        {w + p.wgate_up, gate_up[l], 2 * (int64_t)c.ffn, c.d_model},
        {w + p.wdown, down[l], (int64_t)c.d_model, c.ffn}};
    outlier_ratio(ratios + l, plan.ptr(i_score), outlier_ratio_workspace_bytes(), matrices, 4, options.threshold,
                  stream);
  }
  std::vector<double> D(c.n_layers);
  CUDA_CHECK(cudaMemcpyAsync(D.data(), ratios, c.n_layers * sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return D;
}

}  // namespace owlore
