// Layer samplers of DESIGN.md §1: which γ of the L decoder layers train during a period of K steps.
//   lisa            : γ layers uniformly without replacement (LISA, Pan et al. 2024, Alg. 1).
//   owlore / ows    : γ layers drawn without replacement with p_ℓ = D_ℓ / Σ D by successive sampling:
//                     draw one layer with probability proportional to its weight among the layers
//                     not yet drawn, remove it, repeat. This is what numpy's
//                     `choice(L, γ, replace=False, p=p)` does, which the OwLore code calls
//                     (lmflow/pipeline/finetuner.py, DynamicLayerActivationCallback).
// Under successive sampling the probability that layer ℓ is in the sample is NOT γ·p_ℓ in general
// (γ·p_ℓ can even exceed 1); exact_inclusion_probabilities computes the true value.
//
// Reproducible and resumable: the state is the RNG state plus the current sample, both plain
// integers (to_json / from_json), so a resumed run draws exactly what an uninterrupted one draws.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/rng.h"
#include "base/state_reader.h"

namespace owlore {

struct LayerSampler {
  int n_layers = 0;             // L
  int n_active = 0;             // γ
  int period = 1;               // K: steps between re-samplings
  std::vector<double> weights;  // empty: uniform (lisa); else one non-negative weight per layer
  Rng rng;
  std::vector<int> current;     // the active layers, ascending; empty before the first draw

  // lisa: uniform. Throws if not 1 <= n_active <= n_layers or period < 1.
  static LayerSampler uniform(int n_layers, int n_active, int period, uint64_t seed);
  // owlore / ows: successive weighted sampling. Weights need not sum to 1; at least n_active of
  // them must be positive (otherwise γ distinct layers cannot be drawn — numpy raises too).
  static LayerSampler weighted(std::vector<double> weights, int n_active, int period, uint64_t seed);

  // Whether step (1-based) starts a new period: (step - 1) % period == 0.
  bool resamples_at(int64_t step) const { return (step - 1) % period == 0; }
  // The active layers for step (1-based, ascending): draws a new set when resamples_at(step) or
  // when nothing has been drawn yet, otherwise returns the current one.
  const std::vector<int>& sample(int64_t step);
  // One fresh draw (ascending), consuming randomness; sample() calls it at period boundaries.
  std::vector<int> draw();

  nlohmann::json to_json() const;
  // Restores the state written by to_json; throws naming the field if it does not fit this
  // sampler (different L, γ, K or weights).
  void from_json(const JsonFields& state);
};

// The exact probability that each layer ends up among the first `n_active` draws of successive
// weighted sampling with these weights (DESIGN.md §1, owlore sampling).
//
// Method: dynamic programming over the set of layers drawn so far. The probability that the first
// k draws are exactly the set S (in any order) obeys
//     f(∅) = 1,   f(S ∪ {j}) = Σ_{S, j ∉ S} f(S) · w_j / (W − w(S)),
// because the next draw depends only on which layers are gone, not on their order. Then
// π_i = Σ_{|S| = γ, i ∈ S} f(S). The states are the subsets of size ≤ γ, so the cost is
// Σ_{k≤γ} C(L,k) · L: 250 thousand subsets for L = 32, γ = 5 (the OwLore default on LLaMA-2-7B),
// milliseconds. It throws, naming the sizes, when one level would exceed max_states subsets
// (e.g. L = 32, γ ≥ 10 with the default) rather than approximate.
std::vector<double> exact_inclusion_probabilities(const std::vector<double>& weights, int n_active,
                                                  int64_t max_states = 40'000'000);

}  // namespace owlore
