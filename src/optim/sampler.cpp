#include "optim/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/error.h"

namespace owlore {

namespace {

void check_shape(int n_layers, int n_active, int period) {
  OWLORE_REQUIRE(n_layers >= 1, "layer sampler: expected at least one decoder layer, got ", n_layers);
  OWLORE_REQUIRE(n_active >= 1 && n_active <= n_layers, "layer sampler: expected 1 <= active layers (gamma) <= ",
                 n_layers, ", got ", n_active);
  OWLORE_REQUIRE(period >= 1, "layer sampler: expected a re-sampling period (K) >= 1, got ", period);
}

void check_weights(const std::vector<double>& weights, int n_active) {
  int positive = 0;
  for (size_t i = 0; i < weights.size(); i++) {
    OWLORE_REQUIRE(std::isfinite(weights[i]) && weights[i] >= 0.0, "layer sampler: weight of layer ", i,
                   " must be finite and >= 0, got ", weights[i]);
    positive += weights[i] > 0.0;
  }
  OWLORE_REQUIRE(positive >= n_active, "layer sampler: ", n_active, " layers must be drawn but only ", positive,
                 " of ", weights.size(), " layers have a positive weight");
}

}  // namespace

LayerSampler LayerSampler::uniform(int n_layers, int n_active, int period, uint64_t seed) {
  check_shape(n_layers, n_active, period);
  LayerSampler s;
  s.n_layers = n_layers, s.n_active = n_active, s.period = period, s.rng = Rng(seed);
  return s;
}

LayerSampler LayerSampler::weighted(std::vector<double> weights, int n_active, int period, uint64_t seed) {
  check_shape((int)weights.size(), n_active, period);
  check_weights(weights, n_active);
  LayerSampler s;
  s.n_layers = (int)weights.size(), s.n_active = n_active, s.period = period, s.rng = Rng(seed);
  s.weights = std::move(weights);
  return s;
}

std::vector<int> LayerSampler::draw() {
  std::vector<int> chosen;
  chosen.reserve(n_active);
  if (weights.empty()) {
    // Partial Fisher–Yates: the first γ entries of a uniform random permutation.
    std::vector<int> order(n_layers);
    for (int i = 0; i < n_layers; i++) order[i] = i;
    for (int i = 0; i < n_active; i++) {
      const int j = i + (int)rng.below((uint64_t)(n_layers - i));
      std::swap(order[i], order[j]);
      chosen.push_back(order[i]);
    }
  } else {
    // Successive sampling. The remaining total is re-summed each draw (not decremented) so that
    // rounding cannot leave a removed layer a sliver of probability.
    std::vector<bool> taken(n_layers, false);
    for (int k = 0; k < n_active; k++) {
      double remaining = 0.0;
      int last_positive = -1;
      for (int i = 0; i < n_layers; i++)
        if (!taken[i] && weights[i] > 0.0) remaining += weights[i], last_positive = i;
      const double u = rng.uniform() * remaining;
      double cumulative = 0.0;
      int pick = last_positive;  // u lands past the end only through rounding
      for (int i = 0; i < n_layers; i++) {
        if (taken[i] || weights[i] <= 0.0) continue;
        cumulative += weights[i];
        if (u < cumulative) {
          pick = i;
          break;
        }
      }
      taken[pick] = true;
      chosen.push_back(pick);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

const std::vector<int>& LayerSampler::sample(int64_t step) {
  OWLORE_REQUIRE(step >= 1, "layer sampler: steps are 1-based, got step ", step);
  if (current.empty() || resamples_at(step)) current = draw();
  return current;
}

nlohmann::json LayerSampler::to_json() const {
  // The RNG state is a full 64-bit integer; JSON numbers are doubles in many readers, so it
  // travels as a decimal string.
  return nlohmann::json{{"n_layers", n_layers}, {"n_active", n_active},          {"period", period},
                        {"weights", weights},   {"rng_state", std::to_string(rng.state)}, {"current", current}};
}

void LayerSampler::from_json(const JsonFields& state) {
  const int64_t L = state.integer("n_layers", 0, 1 << 20);
  OWLORE_REQUIRE(L == n_layers, state.path("n_layers"), ": ", L, ", this run has ", n_layers, " decoder layers");
  const int64_t gamma = state.integer("n_active", 0, 1 << 20);
  OWLORE_REQUIRE(gamma == n_active, state.path("n_active"), ": gamma ", gamma, ", this run has ", n_active);
  const int64_t K = state.integer("period", 1, 1 << 30);
  OWLORE_REQUIRE(K == period, state.path("period"), ": ", K, ", this run has ", period);
  OWLORE_REQUIRE(state.numbers("weights", 0.0, 1e300) == weights, state.path("weights"),
                 ": the layer weights differ from this run's (a different outlier file or method?)");
  std::vector<int> restored;
  for (int64_t l : state.integers("current", 0, n_layers - 1)) restored.push_back((int)l);
  OWLORE_REQUIRE(restored.empty() || (int)restored.size() == n_active, state.path("current"), ": ", restored.size(),
                 " layers, expected ", n_active);
  OWLORE_REQUIRE(std::is_sorted(restored.begin(), restored.end()) &&
                     std::adjacent_find(restored.begin(), restored.end()) == restored.end(),
                 state.path("current"), ": expected distinct layers in ascending order");
  rng.state = state.unsigned64("rng_state");
  current = std::move(restored);
}

std::vector<double> exact_inclusion_probabilities(const std::vector<double>& weights, int n_active,
                                                  int64_t max_states) {
  const int L = (int)weights.size();
  check_shape(L, n_active, 1);
  OWLORE_REQUIRE(L <= 62, "exact_inclusion_probabilities: at most 62 layers, got ", L);
  check_weights(weights, n_active);

  // binom[n][k] for the combinatorial number system: the k-subset {c_1 < ... < c_k} has rank
  // Σ_i C(c_i, i), which is its position in the increasing-bitmask (colex) order Gosper's hack
  // enumerates. So a level's probabilities live in a dense array indexed by that rank.
  std::vector<std::vector<int64_t>> binom(L + 1, std::vector<int64_t>(L + 2, 0));
  for (int n = 0; n <= L; n++) {
    binom[n][0] = 1;
    for (int k = 1; k <= n; k++) binom[n][k] = binom[n - 1][k - 1] + (k <= n - 1 ? binom[n - 1][k] : 0);
  }
  for (int k = 0; k <= n_active; k++)
    OWLORE_REQUIRE(binom[L][k] <= max_states, "exact_inclusion_probabilities: ", L, " layers, ", n_active,
                   " drawn needs ", binom[L][k], " subsets of size ", k, ", over the limit of ", max_states);
  auto rank_of = [&](uint64_t mask) {
    int64_t rank = 0;
    int i = 1;
    for (int c = 0; c < L; c++)
      if (mask >> c & 1) rank += binom[c][i++];
    return rank;
  };
  auto next_subset = [](uint64_t x) {  // Gosper's hack: next larger integer with the same popcount
    const uint64_t c = x & (~x + 1), r = x + c;
    return (((r ^ x) >> 2) / c) | r;
  };

  double total = 0.0;
  for (double w : weights) total += w;
  std::vector<double> level{1.0};  // f over the 0-subsets: just the empty set
  for (int k = 0; k < n_active; k++) {
    std::vector<double> next(binom[L][k + 1], 0.0);
    uint64_t mask = (k == 0) ? 0 : ((uint64_t)1 << k) - 1;
    for (int64_t index = 0; index < (int64_t)level.size(); index++, mask = k ? next_subset(mask) : mask) {
      const double f = level[index];
      if (f == 0.0) continue;
      double remaining = total;
      for (int c = 0; c < L; c++)
        if (mask >> c & 1) remaining -= weights[c];
      if (remaining <= 0.0) continue;
      for (int j = 0; j < L; j++)
        if (!(mask >> j & 1) && weights[j] > 0.0) next[rank_of(mask | (uint64_t)1 << j)] += f * weights[j] / remaining;
    }
    level.swap(next);
  }
  std::vector<double> inclusion(L, 0.0);
  uint64_t mask = ((uint64_t)1 << n_active) - 1;
  for (int64_t index = 0; index < (int64_t)level.size(); index++, mask = next_subset(mask))
    for (int c = 0; c < L; c++)
      if (mask >> c & 1) inclusion[c] += level[index];
  return inclusion;
}

}  // namespace owlore
