// Layer samplers (DESIGN.md §1): lisa draws exactly γ distinct layers uniformly; owlore/ows draw
// by successive weighted sampling, whose inclusion frequencies match the exact inclusion
// probabilities (not γ·p); state round-trips for resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>

#include "base/error.h"
#include "optim/sampler.h"

namespace owlore {
namespace {

// The per-layer D of the OwLore repository's LLaMA-2-7B file (metric_cache/llama2_7b_ratio_13.txt),
// rounded: a realistic, strongly non-uniform weight vector for L = 32.
const std::vector<double> kLlama2Ratios = {
    0.2678, 0.2953, 0.1274, 0.1145, 0.0988, 0.0884, 0.0878, 0.0838, 0.0801, 0.0722, 0.0707,
    0.0696, 0.0630, 0.0591, 0.0552, 0.0537, 0.0468, 0.0392, 0.0336, 0.0340, 0.0316, 0.0279,
    0.0278, 0.0229, 0.0254, 0.0209, 0.0242, 0.0182, 0.0184, 0.0209, 0.0241, 0.0825};

// Independent brute force: sum over every ordered sequence of γ distinct draws of its probability.
std::vector<double> enumerate_inclusion(const std::vector<double>& w, int gamma) {
  const int L = (int)w.size();
  std::vector<double> inclusion(L, 0.0);
  std::vector<int> seq;
  std::vector<bool> used(L, false);
  std::function<void(double, double)> recurse = [&](double prob, double remaining) {
    if ((int)seq.size() == gamma) {
      for (int i : seq) inclusion[i] += prob;
      return;
    }
    for (int j = 0; j < L; j++) {
      if (used[j] || w[j] == 0.0) continue;
      used[j] = true, seq.push_back(j);
      recurse(prob * w[j] / remaining, remaining - w[j]);
      used[j] = false, seq.pop_back();
    }
  };
  recurse(1.0, std::accumulate(w.begin(), w.end(), 0.0));
  return inclusion;
}

TEST(Sampler, LisaDrawsExactlyGammaDistinctUniformly) {
  const int L = 30, gamma = 5, draws = 60000;
  LayerSampler s = LayerSampler::uniform(L, gamma, 1, 7);
  std::vector<int> count(L, 0);
  for (int step = 1; step <= draws; step++) {
    const std::vector<int>& active = s.sample(step);
    ASSERT_EQ((int)active.size(), gamma);
    ASSERT_TRUE(std::is_sorted(active.begin(), active.end()));
    ASSERT_EQ(std::set<int>(active.begin(), active.end()).size(), (size_t)gamma) << "duplicate layer at step " << step;
    for (int l : active) {
      ASSERT_TRUE(l >= 0 && l < L);
      count[l]++;
    }
  }
  const double pi = (double)gamma / L, sigma = std::sqrt(pi * (1 - pi) / draws);
  for (int l = 0; l < L; l++)
    EXPECT_LE(std::fabs((double)count[l] / draws - pi), 5 * sigma) << "layer " << l << " frequency "
                                                                   << (double)count[l] / draws << " vs " << pi;
}

TEST(Sampler, ResamplesOnlyAtPeriodBoundaries) {
  LayerSampler s = LayerSampler::weighted(kLlama2Ratios, 5, 50, 3);
  std::vector<int> previous;
  int changes = 0;
  for (int step = 1; step <= 500; step++) {
    const std::vector<int> active = s.sample(step);
    if (step > 1 && (step - 1) % 50 != 0) {
      EXPECT_EQ(active, previous) << "changed inside a period at step " << step;
    }
    if (step > 1 && (step - 1) % 50 == 0) changes += active != previous;
    previous = active;
  }
  EXPECT_GE(changes, 7) << "9 boundaries after the first; the sample should almost always change";
}

TEST(Sampler, ExactInclusionMatchesEnumeration) {
  const std::vector<std::vector<double>> cases = {
      {5, 1, 1, 1, 1, 1, 1, 1}, {0.3, 2.0, 0.0, 1.0, 0.7, 4.0, 0.05}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
  for (const auto& w : cases)
    for (int gamma = 1; gamma <= 4; gamma++) {
      const std::vector<double> exact = exact_inclusion_probabilities(w, gamma);
      const std::vector<double> brute = enumerate_inclusion(w, gamma);
      double sum = 0.0;
      for (size_t i = 0; i < w.size(); i++) {
        EXPECT_NEAR(exact[i], brute[i], 1e-12) << "layer " << i << " gamma " << gamma;
        sum += exact[i];
      }
      EXPECT_NEAR(sum, gamma, 1e-12) << "inclusion probabilities must sum to gamma";
    }
}

TEST(Sampler, InclusionIsNotGammaTimesP) {
  // One heavy layer: γ·p would give it 2·5/12 = 0.833, but it is drawn first with probability 5/12
  // and otherwise second with probability Σ_j (1/12)·5/11 · 7 = 35/132: 0.4167 + 0.2652 = 0.6818.
  const std::vector<double> w = {5, 1, 1, 1, 1, 1, 1, 1};
  const std::vector<double> exact = exact_inclusion_probabilities(w, 2);
  EXPECT_NEAR(exact[0], 5.0 / 12 + 35.0 / 132, 1e-14);
  EXPECT_GT(std::fabs(exact[0] - 2 * 5.0 / 12), 0.15);
  // And γ·p can exceed 1 where a probability cannot: weights 10,1,1,1 with γ = 2 gives 1.54.
  const std::vector<double> heavy = exact_inclusion_probabilities({10, 1, 1, 1}, 2);
  EXPECT_GT(2 * 10.0 / 13, 1.0);
  EXPECT_LT(heavy[0], 1.0);
}

TEST(Sampler, WeightedFrequenciesMatchExactInclusion) {
  // OwLore's setting on LLaMA-2-7B: L = 32, γ = 5, p = D/ΣD from the reference file.
  const int gamma = 5, draws = 200000;
  const std::vector<double> exact = exact_inclusion_probabilities(kLlama2Ratios, gamma);
  LayerSampler s = LayerSampler::weighted(kLlama2Ratios, gamma, 1, 12345);
  std::vector<int> count(kLlama2Ratios.size(), 0);
  for (int d = 0; d < draws; d++) {
    const std::vector<int> active = s.draw();
    ASSERT_EQ(std::set<int>(active.begin(), active.end()).size(), (size_t)gamma);
    for (int l : active) count[l]++;
  }
  const double total = std::accumulate(kLlama2Ratios.begin(), kLlama2Ratios.end(), 0.0);
  double max_z = 0.0, chi2 = 0.0, max_gap_to_gamma_p = 0.0;
  for (size_t l = 0; l < exact.size(); l++) {
    const double freq = (double)count[l] / draws, pi = exact[l];
    const double sigma = std::sqrt(pi * (1 - pi) / draws);
    max_z = std::max(max_z, std::fabs(freq - pi) / sigma);
    chi2 += (freq - pi) * (freq - pi) / (sigma * sigma);
    max_gap_to_gamma_p = std::max(max_gap_to_gamma_p, std::fabs(pi - gamma * kLlama2Ratios[l] / total));
    EXPECT_LE(std::fabs(freq - pi), 5 * sigma) << "layer " << l << ": frequency " << freq << ", exact " << pi;
  }
  // Each z² is ~χ²(1); the layers are dependent (the counts sum to γ·draws) but the sum of 32 of
  // them staying under 80 is a loose check that no systematic bias hides below the 5σ bound.
  std::printf("L=32 gamma=5, %d draws: max |z| %.2f, sum z^2 %.1f, max |pi - gamma p| %.3f (layer 1: pi %.4f, gamma p %.4f)\n",
              draws, max_z, chi2, max_gap_to_gamma_p, exact[1], gamma * kLlama2Ratios[1] / total);
  EXPECT_LT(chi2, 80.0) << "sum of z^2 over 32 layers, max |z| = " << max_z;
  // The frequencies also tell the exact inclusion apart from γ·p on this realistic vector.
  EXPECT_GT(max_gap_to_gamma_p, 0.05) << "largest |pi - gamma p| on the LLaMA-2 ratios";
  const double z_gamma_p = std::fabs((double)count[1] / draws - gamma * kLlama2Ratios[1] / total) /
                           std::sqrt(exact[1] * (1 - exact[1]) / draws);
  EXPECT_GT(z_gamma_p, 20.0) << "layer 1's frequency should be far (in sigmas) from gamma p";
}

TEST(Sampler, ZeroWeightLayersAreNeverDrawn) {
  std::vector<double> w(10, 1.0);
  w[3] = 0.0, w[7] = 0.0;
  LayerSampler s = LayerSampler::weighted(w, 8, 1, 5);
  for (int d = 0; d < 200; d++)
    for (int l : s.draw()) EXPECT_TRUE(l != 3 && l != 7);
  EXPECT_THROW(LayerSampler::weighted(w, 9, 1, 5), Error);  // only 8 layers can be drawn
  EXPECT_THROW(LayerSampler::uniform(4, 5, 1, 0), Error);
  EXPECT_THROW(LayerSampler::uniform(4, 2, 0, 0), Error);
}

TEST(Sampler, StateRoundTripResumesIdentically) {
  LayerSampler a = LayerSampler::weighted(kLlama2Ratios, 5, 7, 99);
  for (int step = 1; step <= 30; step++) a.sample(step);
  const nlohmann::json saved = nlohmann::json::parse(a.to_json().dump());
  LayerSampler b = LayerSampler::weighted(kLlama2Ratios, 5, 7, 0);  // different seed: state must win
  b.from_json(JsonFields(saved, "sampler"));
  EXPECT_EQ(b.current, a.current);
  for (int step = 31; step <= 300; step++) ASSERT_EQ(a.sample(step), b.sample(step)) << "diverged at step " << step;

  LayerSampler lisa = LayerSampler::uniform(32, 5, 7, 1);
  EXPECT_THROW(lisa.from_json(JsonFields(saved, "sampler")), Error);  // weights differ
  nlohmann::json broken = saved;
  broken.erase("rng_state");
  EXPECT_THROW(b.from_json(JsonFields(broken, "sampler")), Error);
  // A damaged sample or generator state is an error naming the field, never a crash.
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"current", {0, 99, 3, 4, 5}}, {"current", {4, 3, 2, 1, 0}}, {"current", "x"}, {"rng_state", "-1"},
           {"rng_state", 1.5}, {"n_active", 4294967301.0}, {"period", -7}}) {
    nlohmann::json damaged = saved;
    damaged[key] = value;
    try {
      b.from_json(JsonFields(damaged, "sampler"));
      ADD_FAILURE() << key << " = " << value.dump() << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sampler." + key), std::string::npos) << e.what();
    }
  }
}

TEST(Sampler, ExactInclusionRefusesHugeProblems) {
  EXPECT_THROW(exact_inclusion_probabilities(std::vector<double>(40, 1.0), 12), Error);
}

}  // namespace
}  // namespace owlore
