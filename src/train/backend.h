// A device's model, gradients and optimizer state, driven by the one training loop
// (trainer.cpp). The CPU backend runs the twins in fp32 (tiny models, CI); the GPU backend runs
// the kernels with bf16 weights. Both keep optimizer state only for what trains, and both take
// the set of trained parameters (TrainMask) from the loop, which gets it from the sampler.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/state_bundle.h"
#include "base/state_reader.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "model/model_gpu.h"
#include "optim/galore_cpu.h"
#include "optim/optimizer_options.h"

namespace owlore {

// GaLore projector refreshes done by the last optimizer step and the gradient energy their
// projectors capture, ‖R‖²/‖G‖² (DESIGN.md §1): logged, since a low value means the rank is too
// small or the projector went stale.
struct ProjectorReport {
  int refreshes = 0;
  double mean_energy = 0, min_energy = 0;
  void add(double energy) {
    min_energy = refreshes ? std::min(min_energy, energy) : energy;
    mean_energy = (mean_energy * refreshes + energy) / (refreshes + 1);
    refreshes++;
  }
};

struct MemoryReport {
  double in_use_bytes = 0, peak_bytes = 0;  // device memory (GPU) or state bytes (CPU)
};

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  virtual std::string device_name() const = 0;
  // From now on train exactly what mask says; decoder layers that leave or join the set are
  // handled by OptimizerOptions::state_policy. resample = true marks a period boundary (the
  // "reset" policy restarts every layer's state there); false is a plain mask change (resume).
  virtual void set_mask(const TrainMask& mask, bool resample = false) = 0;
  // One micro-batch: forward, backward; gradients (scaled by loss_scale) accumulate until the
  // next optimizer_step. Returns the summed loss over kept targets.
  virtual double forward_backward(const int32_t* inputs /*(B,T)*/, const int32_t* targets /*(B,T)*/, int B, int T,
                                  float loss_scale) = 0;
  // Loss only; *kept receives the number of kept targets.
  virtual double forward_loss(const int32_t* inputs, const int32_t* targets, int B, int T, int64_t* kept) = 0;
  // Sum of squares of the accumulated gradients of everything that trains (for clipping).
  virtual double grad_sum_squares() = 0;
  // AdamW on everything that trains, gradients times clip_scale; then clears the gradients.
  virtual void optimizer_step(float lr, float clip_scale) = 0;
  // The weights as fp32, arena order (checkpoints, evaluation elsewhere).
  virtual void read_weights(std::vector<float>& out) = 0;
  virtual MemoryReport memory() = 0;
  virtual ProjectorReport projector_report() const { return {}; }
  // Weights and optimizer state, exactly (resume continues bit-for-bit), and back: load_state
  // checks every tensor it takes (optim/optimizer_state.h) and expects set_mask with the saved
  // mask first.
  virtual void save_state(StateBundle& out) = 0;
  virtual void load_state(StateReader& in) = 0;
  // The memory plan as a printable table (empty for the CPU).
  virtual std::string plan_table() const { return ""; }
};

std::unique_ptr<TrainBackend> make_cpu_backend(const ModelLayout& layout, std::vector<float> weights,
                                               const OptimizerOptions& options);
// model: batch x seq tokens per micro-batch, LM-head chunk, recompute level; n_layer_slots: how
// many decoder layers may train at once (all of them for full fine-tuning, γ for sampling) —
// their gradient and state slots are allocated once, at start.
std::unique_ptr<TrainBackend> make_gpu_backend(const ModelLayout& layout, const std::vector<float>& weights,
                                               const OptimizerOptions& options, const GpuModelOptions& model,
                                               int n_layer_slots);

}  // namespace owlore
