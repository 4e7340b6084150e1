// The --state policies on the GPU backend (one slot recycled between two layers; "keep" parks
// a leaving layer's state in host memory) must leave exactly the optimizer step counts the CPU
// backend leaves, and, under "keep", the same moments up to the bf16 training noise.
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "test_util.h"
#include "train/backend.h"

using namespace owlore;

namespace {
StateBundle round_trip(const std::string& device, const std::string& policy) {
  const ModelConfig cfg = preset_config("tiny-gpu");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 3);
  OptimizerOptions options;
  options.state_policy = parse_choice(kStatePolicyChoices, policy, "--state");
  const int B = 2, T = 17;
  auto backend = device == "cpu" ? make_cpu_backend(layout, w, options)
                                 : make_gpu_backend(layout, w, options, GpuModelOptions{B, T}, /*n_layer_slots=*/1);
  auto inputs = test::random_tokens(B * T, cfg.vocab, 4), targets = test::random_tokens(B * T, cfg.vocab, 5);
  auto train = [&](std::vector<bool> layers, int steps) {
    backend->set_mask(TrainMask{layers, true, true}, /*resample=*/true);
    for (int i = 0; i < steps; i++) {
      backend->forward_backward(inputs.data(), targets.data(), B, T, 1.0f / (B * T));
      backend->optimizer_step(1e-3f, 1.0f);
    }
  };
  train({true, false}, 2);
  train({false, true}, 1);
  train({true, false}, 1);
  train({true, false}, 1);
  StateBundle state;
  backend->save_state(state);
  return state;
}
}  // namespace

class StatePolicyGpu : public ::testing::TestWithParam<const char*> {};
TEST_P(StatePolicyGpu, SameStepCountsAndMomentsAsTheCpu) {
  OWLORE_SKIP_WITHOUT_GPU();
  const StateBundle gpu = round_trip("cuda", GetParam()), cpu = round_trip("cpu", GetParam());
  EXPECT_EQ(gpu.meta.at("adam.steps"), cpu.meta.at("adam.steps")) << GetParam();
  for (const auto& [name, values] : cpu.tensors) {
    if (name == "weights") continue;
    ASSERT_TRUE(gpu.tensors.count(name)) << GetParam() << ": the GPU state lacks " << name;
    // bf16 training noise: gradients differ from the fp32 CPU's by ~2.5%, so m by as much and v
    // (∝ g²) by twice that (5.0-5.5% measured on the H200 for a layer that rejoined one or two
    // steps ago; m of layer 0's down projection 5.01% under "drop"); a policy that kept or
    // dropped the wrong state is off by O(1).
    const bool second_moment = name.size() > 2 && name.compare(name.size() - 2, 2, ".v") == 0;
    const double err = test::rel_error(gpu.tensors.at(name), values);
    EXPECT_LE(err, second_moment ? 1.5e-1 : 7.5e-2) << GetParam() << " " << name << ": moments rel error " << err;
  }
}
INSTANTIATE_TEST_SUITE_P(Policies, StatePolicyGpu, ::testing::Values("drop", "keep", "reset"));
