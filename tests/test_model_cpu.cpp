// Whole-model gradient check of the CPU LLaMA in double precision: the backward's gradient of
// sampled parameters of every tensor equals the central difference of the mean loss (plain RoPE
// and llama3 rope_scaling); the token-by-token decoder against the full forward.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/tokens.h"
#include "base/error.h"
#include "kernels/ref/ops_ref.h"
#include "model/decode_cpu.h"
#include "model/model_cpu.h"
#include "test_util.h"

using namespace owlore;

namespace {

struct Batch {
  int B, T;
  std::vector<int32_t> inputs, targets;
};

Batch make_batch(const ModelConfig& cfg, int B, int T, uint64_t seed) {
  Batch b{B, T, {}, {}};
  auto tokens = test::random_tokens((int64_t)B * (T + 1), cfg.vocab, seed);
  for (int i = 0; i < B; i++)
    for (int t = 0; t < T; t++) {
      b.inputs.push_back(tokens[i * (T + 1) + t]);
      b.targets.push_back(t == 1 ? kIgnoreIndex : tokens[i * (T + 1) + t + 1]);  // one masked target
    }
  return b;
}

double mean_loss(CpuModel<double>& model, const std::vector<double>& w, const Batch& b) {
  int64_t kept = 0;
  const double sum = model.forward(w.data(), b.inputs.data(), b.targets.data(), b.B, b.T, &kept);
  return sum / kept;
}

}  // namespace

class ModelGradient : public ::testing::TestWithParam<const char*> {};

// "<preset>+llama3": the preset with llama3 rope_scaling, original context 64: tiny's head_dim 10
// has a pair in the kept band, one in the interpolated band and three divided by the factor.
ModelConfig test_config(const std::string& name) {
  const size_t plus = name.find("+llama3");
  ModelConfig cfg = preset_config(name.substr(0, plus));
  if (plus != std::string::npos) cfg.rope_scaling = {RopeScalingType::llama3, 8.0f, 1.0f, 4.0f, 64};
  return cfg;
}

TEST_P(ModelGradient, MatchesFiniteDifferencesOnEveryTensor) {
  const ModelConfig cfg = test_config(GetParam());
  const ModelLayout layout(cfg);
  std::vector<double> w(layout.total);
  init_weights(layout, w.data(), 1);
  // Larger weights than the init so every path carries signal; norms away from 1.
  Rng rng(2);
  for (auto& v : w) v = v * 5 + 0.05 * rng.normal();
  const Batch batch = make_batch(cfg, 2, 7, 3);
  CpuModel<double> model(layout);
  int64_t kept = 0;
  model.forward(w.data(), batch.inputs.data(), batch.targets.data(), batch.B, batch.T, &kept);
  ASSERT_EQ(kept, 2 * 6);
  std::vector<double> grads(layout.total, 0.0);
  model.backward(grads.data(), w.data(), TrainMask::all(cfg.n_layers), 1.0 / kept);

  const double h = 1e-6;
  for (const TensorSlot& t : layout.tensors) {
    double diff = 0, norm = 0;
    for (int k = 0; k < 6; k++) {
      const int64_t i = t.offset + (int64_t)((k * 2654435761u) % t.numel());
      const double saved = w[i];
      w[i] = saved + h;
      const double plus = mean_loss(model, w, batch);
      w[i] = saved - h;
      const double minus = mean_loss(model, w, batch);
      w[i] = saved;
      const double numeric = (plus - minus) / (2 * h);
      diff += (numeric - grads[i]) * (numeric - grads[i]);
      norm += numeric * numeric;
    }
    // Relative error, with an absolute floor for entries whose true gradient is ~0 (rows of
    // tokens not in the batch): central differences in double carry ~1e-10 of rounding noise.
    const double err = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-4);
    EXPECT_LE(err, 1e-5) << t.name << ": gradient rel error " << err << " (|g| " << std::sqrt(norm) << ")";
  }
}
INSTANTIATE_TEST_SUITE_P(TinyPresets, ModelGradient, ::testing::Values("tiny", "tiny-tied", "tiny-mha", "tiny+llama3"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-' || ch == '+') ch = '_';
                           return name;
                         });

TEST(CpuDecoder, LogitsMatchTheFullForward) {
  for (const char* name : {"tiny", "tiny+llama3"}) {
    const ModelConfig cfg = test_config(name);
    const ModelLayout layout(cfg);
    std::vector<float> w(layout.total);
    init_weights(layout, w.data(), 3);
    for (auto& v : w) v *= 3;  // more signal through the layers
    const int T = 13;
    const Batch batch = make_batch(cfg, 1, T, 5);
    CpuModel<float> model(layout);
    int64_t kept = 0;
    model.forward(w.data(), batch.inputs.data(), batch.targets.data(), 1, T, &kept);
    const std::vector<float> all = model.all_logits(w.data());
    CpuDecoder decoder(layout, w.data(), T);
    for (int t = 0; t < T; t++) {
      const std::vector<float>& logits = decoder.step(batch.inputs[t]);
      double diff = 0, norm = 0;
      for (int v = 0; v < cfg.vocab; v++) {
        const double want = all[(int64_t)t * cfg.vocab + v];
        diff = std::max(diff, std::abs(logits[v] - want));
        norm = std::max(norm, std::abs(want));
      }
      EXPECT_LE(diff, 1e-4 * norm) << name << " position " << t;
    }
  }
}

TEST(CpuDecoder, RefusesPositionsPastTheSlidingWindow) {
  ModelConfig cfg = preset_config("tiny");
  cfg.sliding_window = 5;
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 3);
  CpuDecoder decoder(layout, w.data(), 10);
  for (int t = 0; t < 5; t++) decoder.step(t);
  test::expect_error([&] { decoder.step(5); }, {"config.json sliding_window 5"});
}

TEST(ModelCpu, FrozenLayersGetNoGradientAndTrainedOnesMatchTheFullBackward) {
  const ModelConfig cfg = preset_config("tiny");
  const ModelLayout layout(cfg);
  std::vector<double> w(layout.total);
  init_weights(layout, w.data(), 4);
  const Batch batch = make_batch(cfg, 2, 5, 5);
  CpuModel<double> model(layout);
  int64_t kept = 0;
  model.forward(w.data(), batch.inputs.data(), batch.targets.data(), batch.B, batch.T, &kept);
  std::vector<double> full(layout.total, 0.0), partial(layout.total, 0.0);
  model.backward(full.data(), w.data(), TrainMask::all(cfg.n_layers), 1.0 / kept);
  TrainMask mask{{false, true, false}, /*embedding=*/false, /*head=*/true};
  model.backward(partial.data(), w.data(), mask, 1.0 / kept);
  for (const TensorSlot& t : layout.tensors) {
    const bool trained = t.layer == 1 || t.name == "model.norm.weight" || t.name == "lm_head.weight";
    for (int64_t i = t.offset; i < t.offset + t.numel(); i++) {
      if (trained)
        ASSERT_EQ(partial[i], full[i]) << t.name;
      else
        ASSERT_EQ(partial[i], 0.0) << t.name << " is frozen but received a gradient";
    }
  }
}

TEST(ModelCpu, RejectsTokensOutsideTheVocabulary) {
  const ModelConfig cfg = preset_config("tiny");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 1);
  CpuModel<float> model(layout);
  std::vector<int32_t> inputs = {1, cfg.vocab}, targets = {1, 2};
  EXPECT_THROW(model.forward(w.data(), inputs.data(), targets.data(), 1, 2, nullptr), Error);
}
