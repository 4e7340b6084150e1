// Layerwise outlier distribution D_ℓ (DESIGN.md §1): the runtime's calibration equals a direct
// transcription of the formula (per HF matrix, own forward, own sums); planted outliers are
// found where they were planted; the mean is over the 7 matrices' concatenation; the JSON file
// round-trips and its errors name the file; the sampling weights' guard.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "base/error.h"
#include "base/rng.h"
#include "optim/outliers.h"
#include "test_util.h"

namespace owlore {
namespace {

const char* kMatrices[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

ModelConfig four_layer_tiny() {
  ModelConfig c = preset_config("tiny");
  c.name = "tiny-4";
  c.n_layers = 4;
  return c;
}

// Energies per HF matrix for one layer, transcribed from the saved activations; the input of each
// matrix is named from the LLaMA block, not from the runtime's fused grouping.
std::vector<double> column_energy(const std::vector<float>& rows, int64_t channels) {
  std::vector<double> s(channels, 0.0);
  for (size_t r = 0; r < rows.size() / channels; r++)
    for (int64_t j = 0; j < channels; j++) s[j] += (double)rows[r * channels + j] * rows[r * channels + j];
  return s;
}

// D_ℓ = 100·#{A > M·mean(A)}/#A over the concatenated A of the 7 matrices (or per matrix when
// per_matrix_mean, the wrong variant, to show it differs).
double transcribed_ratio(const ModelLayout& layout, const std::vector<float>& w, int layer,
                         const std::vector<std::vector<double>>& energy /*7 matrices*/, double M,
                         bool per_matrix_mean = false) {
  std::vector<std::vector<double>> scores(7);
  for (int k = 0; k < 7; k++) {
    const TensorSlot* t = layout.find("model.layers." + std::to_string(layer) + "." + kMatrices[k] + ".weight");
    EXPECT_NE(t, nullptr);
    for (int64_t i = 0; i < t->rows; i++)
      for (int64_t j = 0; j < t->cols; j++)
        scores[k].push_back(std::fabs((double)w[t->offset + i * t->cols + j]) * std::sqrt(energy[k][j]));
  }
  int64_t count = 0, outliers = 0;
  if (per_matrix_mean) {
    for (const auto& a : scores) {
      double mean = 0.0;
      for (double x : a) mean += x;
      mean /= (double)a.size();
      for (double x : a) outliers += x > M * mean;
      count += (int64_t)a.size();
    }
  } else {
    std::vector<double> all;
    for (const auto& a : scores) all.insert(all.end(), a.begin(), a.end());
    double sum = 0.0;
    for (double x : all) sum += x;
    const double mean = sum / (double)all.size();
    for (double x : all) outliers += x > M * mean;
    count = (int64_t)all.size();
  }
  return 100.0 * (double)outliers / (double)count;
}

TEST(Outliers, CalibrationMatchesTranscriptionAndFindsPlantedOutliers) {
  const ModelConfig config = four_layer_tiny();
  const ModelLayout layout(config);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 11);
  // Plant 40 large weights (50x the init scale) in layer 1's matrices: 10 in q, 10 in v,
  // 10 in gate, 10 in down.
  Rng rng(3);
  int planted = 0;
  for (const char* name : {"self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.down_proj"}) {
    const TensorSlot* t = layout.find(std::string("model.layers.1.") + name + ".weight");
    ASSERT_NE(t, nullptr);
    for (int i = 0; i < 10; i++, planted++) w[t->offset + (int64_t)rng.below(t->numel())] = (rng.uniform() < 0.5 ? -1.0f : 1.0f);
  }
  const int n_sequences = 5, seq_len = 13;
  const std::vector<int> tokens_int = test::random_tokens((int64_t)n_sequences * seq_len, config.vocab, 8);
  const std::vector<int32_t> tokens(tokens_int.begin(), tokens_int.end());

  OutlierOptions options;  // M = 13
  options.batch_sequences = 2;  // 3 forwards: 2 + 2 + 1 sequences
  const std::vector<double> D = compute_outlier_distribution(layout, w.data(), tokens.data(), n_sequences, seq_len, options);
  ASSERT_EQ((int)D.size(), config.n_layers);

  // Transcription: one forward over all sequences, energies per HF matrix.
  CpuModel<float> model(layout);
  std::vector<int32_t> targets(tokens.size(), -1);
  model.forward(w.data(), tokens.data(), targets.data(), n_sequences, seq_len, nullptr);
  int64_t layer_numel = 0;
  for (int k = 0; k < 7; k++) layer_numel += layout.find(std::string("model.layers.0.") + kMatrices[k] + ".weight")->numel();
  for (int l = 0; l < config.n_layers; l++) {
    const std::vector<double> s_ln1 = column_energy(model.matrix_input(l, MatrixInput::qkv), config.d_model);
    const std::vector<double> s_att = column_energy(model.matrix_input(l, MatrixInput::o), config.q_dim());
    const std::vector<double> s_ln2 = column_energy(model.matrix_input(l, MatrixInput::gate_up), config.d_model);
    const std::vector<double> s_h = column_energy(model.matrix_input(l, MatrixInput::down), config.ffn);
    const std::vector<std::vector<double>> energy = {s_ln1, s_ln1, s_ln1, s_att, s_ln2, s_ln2, s_h};
    const double expected = transcribed_ratio(layout, w, l, energy, 13.0);
    EXPECT_NEAR(D[l], expected, 1e-12) << "layer " << l;
    std::printf("layer %d: D = %.4f%% (%.0f of %lld entries)\n", l, D[l], D[l] * layer_numel / 100, (long long)layer_numel);
  }
  // The planted weights make layer 1 the outlier layer. Not every planted weight need pass the cut:
  // A scales it by sqrt(s_j), and some input channels (of att and of h after SwiGLU) carry little
  // energy — here 30 of the 40 do. Layer 0, below the planted weights, has none.
  EXPECT_GE(D[1] * layer_numel / 100 + 1e-9, planted / 2);
  for (int l = 0; l < config.n_layers; l++)
    if (l != 1) {
      EXPECT_GT(D[1], 10 * D[l]) << "layer " << l;
    }
  EXPECT_EQ(D[0], 0.0);
}

TEST(Outliers, KnownAnswerWithUniformEnergy) {
  // With s_j = 1 for every channel, A = |W|: the init entries (|N(0, 0.02)|, mean 0.016) never
  // exceed 13 · mean ≈ 0.21, so D_ℓ is exactly the planted count over the layer's entries.
  const ModelConfig config = four_layer_tiny();
  const ModelLayout layout(config);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 5);
  InputEnergy energy(config);
  for (auto* group : {&energy.qkv, &energy.o, &energy.gate_up, &energy.down})
    for (auto& layer : *group) layer.assign(layer.size(), 1.0);
  const TensorSlot* k2 = layout.find("model.layers.2.self_attn.k_proj.weight");
  const TensorSlot* up2 = layout.find("model.layers.2.mlp.up_proj.weight");
  for (int i = 0; i < 7; i++) w[k2->offset + 3 * i] = 2.0f;
  for (int i = 0; i < 5; i++) w[up2->offset + 11 * i] = -2.0f;
  int64_t layer_numel = 0;
  for (int k = 0; k < 7; k++) layer_numel += layout.find(std::string("model.layers.2.") + kMatrices[k] + ".weight")->numel();
  for (int l = 0; l < config.n_layers; l++) {
    const double D = layer_outlier_ratio(layout, w.data(), energy, l, 13.0);
    EXPECT_DOUBLE_EQ(D, l == 2 ? 100.0 * 12 / layer_numel : 0.0) << "layer " << l;
  }
}

TEST(Outliers, MeanIsOverTheConcatenationNotPerMatrix) {
  // Down's input channels carry 10^6 times the energy of the others: over the concatenation the
  // mean is dominated by down and many of its entries pass 13 · mean; with a per-matrix mean
  // (the wrong reading) almost none would.
  const ModelConfig config = four_layer_tiny();
  const ModelLayout layout(config);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 9);
  InputEnergy energy(config);
  Rng rng(4);
  for (auto* group : {&energy.qkv, &energy.o, &energy.gate_up})
    for (auto& layer : *group)
      for (double& s : layer) s = 0.5 + rng.uniform();
  for (auto& layer : energy.down)
    for (double& s : layer) s = 1e6 * (0.5 + rng.uniform());
  const int l = 3;
  const std::vector<std::vector<double>> per_hf = {energy.qkv[l], energy.qkv[l],     energy.qkv[l],   energy.o[l],
                                                   energy.gate_up[l], energy.gate_up[l], energy.down[l]};
  const double D = layer_outlier_ratio(layout, w.data(), energy, l, 13.0);
  const double concatenated = transcribed_ratio(layout, w, l, per_hf, 13.0, false);
  const double per_matrix = transcribed_ratio(layout, w, l, per_hf, 13.0, true);
  std::printf("D_3 over the concatenation %.4f%%, with per-matrix means it would be %.4f%%\n", concatenated, per_matrix);
  EXPECT_NEAR(D, concatenated, 1e-12);
  EXPECT_GT(D, 1.0);
  EXPECT_GT(std::fabs(D - per_matrix), 1.0);
}

TEST(Outliers, FileRoundTripAndErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "owlore_outliers_test.json";
  const std::vector<double> D = {0.25, 0.0, 3.5, 1.0 / 3.0};
  write_outlier_file(path, D, OutlierMetadata{"tiny-4", 13.0, 128, 2048});
  const OutlierFile back = read_outlier_file(path, 4);
  EXPECT_EQ(back.D, D);  // nlohmann writes doubles round-trip exactly
  EXPECT_EQ(back.metadata.model, "tiny-4");
  EXPECT_EQ(back.metadata.n_sequences, 128);
  EXPECT_EQ(back.metadata.seq_len, 2048);
  EXPECT_DOUBLE_EQ(back.metadata.threshold, 13.0);

  auto expect_error_naming = [&](const std::string& file, int layers, const std::string& fragment) {
    try {
      read_outlier_file(file, layers);
      ADD_FAILURE() << "no error for " << file;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error_naming(path, 32, "the model has 32");
  expect_error_naming(path + ".missing", -1, "cannot open");
  const std::string bad = ::testing::TempDir() + "owlore_outliers_bad.json";
  std::ofstream(bad) << "{\"format\": \"owlore-outliers\", \"version\": 1, \"D\": [1, -2]}";
  expect_error_naming(bad, -1, "D[1]");
  std::ofstream(bad) << "not json";
  expect_error_naming(bad, -1, "not valid JSON");
  std::remove(path.c_str());
  std::remove(bad.c_str());
}

TEST(Outliers, SamplingWeightsGuard) {
  // Real D: unchanged (the reference's p = D/ΣD).
  const std::vector<double> D = {2.7, 2.9, 1.3, 0.2, 0.8};
  EXPECT_EQ(outlier_sampling_weights(D), D);
  // No outliers anywhere: uniform.
  EXPECT_EQ(outlier_sampling_weights({0, 0, 0}), std::vector<double>(3, 1.0));
  // A layer without outliers stays drawable at 1% of the mean; floor 0 keeps the reference's 0.
  const std::vector<double> w = outlier_sampling_weights({4, 0, 2});
  EXPECT_DOUBLE_EQ(w[1], 0.01 * 2.0);
  EXPECT_EQ(outlier_sampling_weights({4, 0, 2}, 0.0)[1], 0.0);
  EXPECT_THROW(outlier_sampling_weights({1, -1}), Error);
}

}  // namespace
}  // namespace owlore
