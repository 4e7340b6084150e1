// What happens to a sampled layer's optimizer state when it leaves the active set and comes back
// (DESIGN.md §2; --state): drop forgets it, keep restores it, reset restarts every layer at each
// re-sampling. Observed through the backend's saved state: the Adam step count of each tensor.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/ref/ops_ref.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "test_util.h"
#include "train/backend.h"

using namespace owlore;

namespace {

// Trains layer 0 for two steps, layer 1 for one, then layer 0 for one step and, after another
// re-sampling that keeps it, one more: each call is a re-sampling. Returns the saved Adam step
// counts.
nlohmann::json steps_after_round_trip(const std::string& policy) {
  const ModelConfig cfg = preset_config("tiny");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 3);
  OptimizerOptions options;
  options.state_policy = parse_choice(kStatePolicyChoices, policy, "--state");
  auto backend = make_cpu_backend(layout, w, options);
  const int B = 2, T = 9;
  auto inputs = test::random_tokens(B * T, cfg.vocab, 4), targets = test::random_tokens(B * T, cfg.vocab, 5);
  auto train = [&](std::vector<bool> layers, int steps) {
    backend->set_mask(TrainMask{layers, true, true}, /*resample=*/true);
    for (int i = 0; i < steps; i++) {
      backend->forward_backward(inputs.data(), targets.data(), B, T, 1.0f / (B * T));
      backend->optimizer_step(1e-3f, 1.0f);
    }
  };
  train({true, false, false}, 2);
  train({false, true, false}, 1);
  train({true, false, false}, 1);
  train({true, false, false}, 1);
  StateBundle state;
  backend->save_state(state);
  return state.meta.at("adam.steps");
}

const char* kLayer0 = "model.layers.0.self_attn.q_proj.weight";
const char* kLayer1 = "model.layers.1.mlp.down_proj.weight";

}  // namespace

TEST(StatePolicy, DropForgetsALeavingLayer) {
  const auto steps = steps_after_round_trip("drop");
  EXPECT_EQ(steps.at(kLayer0).get<int>(), 2) << "layer 0 came back fresh, then stayed one period";
  EXPECT_FALSE(steps.contains(kLayer1)) << "layer 1 left: its state is gone";
  EXPECT_EQ(steps.at("model.embed_tokens.weight").get<int>(), 5) << "the embedding keeps its state";
}

TEST(StatePolicy, KeepRestoresAReturningLayer) {
  const auto steps = steps_after_round_trip("keep");
  EXPECT_EQ(steps.at(kLayer0).get<int>(), 4) << "layer 0 continues where it left";
  EXPECT_EQ(steps.at(kLayer1).get<int>(), 1) << "layer 1's state is kept while it is out";
}

TEST(StatePolicy, ResetRestartsEveryLayerEachPeriod) {
  const auto steps = steps_after_round_trip("reset");
  EXPECT_EQ(steps.at(kLayer0).get<int>(), 1) << "layer 0 stayed across a re-sampling yet restarts";
  EXPECT_FALSE(steps.contains(kLayer1));
  EXPECT_EQ(steps.at("model.embed_tokens.weight").get<int>(), 5) << "the embedding keeps its state";
}
