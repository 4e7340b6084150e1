// What the optimizer of a run is asked to do, shared by both training backends (DESIGN.md §1-2).
#pragma once
#include <cstdint>

#include "base/choices.h"
#include "optim/galore_cpu.h"

namespace owlore {

// Precision of the full-rank Adam moments (embedding, head, norms, and the layers of full, lisa
// and ows) on the GPU; GaLore's low-rank moments are always fp32. The CPU twin keeps fp32.
enum class MomentsDtype { fp32, bf16 };
inline constexpr ChoiceTable<MomentsDtype, 2> kMomentsChoices{{{"fp32", MomentsDtype::fp32}, {"bf16", MomentsDtype::bf16}}};
inline const char* name(MomentsDtype d) { return choice_name(kMomentsChoices, d); }

// What happens to a decoder layer's optimizer state when the sampled set changes (DESIGN.md
// §2): drop — a layer that leaves loses it, and starts fresh when it comes back; keep — it is
// parked in host memory and restored when the layer comes back; reset — every re-sampling
// restarts the state of every decoder layer (the LISA authors' per-period restart). The
// embedding, head and final norm keep their state for the whole run under every policy.
enum class StatePolicy { drop, keep, reset };
inline constexpr ChoiceTable<StatePolicy, 3> kStatePolicyChoices{
    {{"drop", StatePolicy::drop}, {"keep", StatePolicy::keep}, {"reset", StatePolicy::reset}}};
inline const char* name(StatePolicy p) { return choice_name(kStatePolicyChoices, p); }

inline constexpr ChoiceTable<ProjectorMode, 2> kProjectorChoices{{{"exact", ProjectorMode::exact}, {"fast", ProjectorMode::fast}}};
inline const char* name(ProjectorMode m) { return choice_name(kProjectorChoices, m); }

struct OptimizerOptions {
  // ε 1e-6 as the official GaLore optimizer (DESIGN.md §1); the embedding, head and norm AdamW
  // use the same ε (one --eps for the run).
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f, weight_decay = 0.0f;
  MomentsDtype moments = MomentsDtype::fp32;
  StatePolicy state_policy = StatePolicy::drop;
  // false (--freeze-embeddings): the embedding, final norm and head never train, so the GPU plans
  // no gradient and no moments for them (2.6 GiB at 7B, 16 x 512 tokens, with fp32 moments).
  bool train_embeddings = true;
  uint64_t seed = 0;             // stochastic rounding of bf16 updates, randomized projectors
  // GaLore-Adam (DESIGN.md §1) for the 2-D matrices of trained decoder layers; AdamW for the rest.
  bool galore = false;
  GaloreConfig galore_config;
  // GPU GaLore without gradient buffers (DESIGN.md §2): each trained matrix's gradient passes
  // through one workspace during the backward — its squared norm is added up, the projector is
  // refreshed from it when due, and it is projected into R — so a layer slot holds no full
  // gradient. Exact for one micro-batch per step; the trainer turns it off under --grad-accum > 1,
  // where the clip norm needs the norm of the summed gradient, which only a buffer holds.
  bool stream_galore_gradients = true;
  // Micro-batches per optimizer step (--grad-accum): the GPU sizes an untied embedding's sparse
  // gradient for this many micro-batches of tokens.
  int micro_batches_per_step = 1;
};

}  // namespace owlore
