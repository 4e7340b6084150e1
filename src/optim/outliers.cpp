#include "optim/outliers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "base/error.h"

namespace owlore {

namespace {

void add_squares(std::vector<double>& sums, const std::vector<float>& rows, const char* what) {
  const size_t channels = sums.size();
  OWLORE_REQUIRE(channels > 0 && rows.size() % channels == 0, "outlier scores: saved input '", what, "' has ",
                 rows.size(), " values, not a multiple of its ", channels, " channels");
  for (size_t r = 0; r < rows.size(); r += channels)
    for (size_t j = 0; j < channels; j++) sums[j] += (double)rows[r + j] * rows[r + j];
}

// One weight matrix (out, in) of a layer and the energies of its input channels.
struct ScoredMatrix {
  const float* w;
  int64_t rows, cols;
  const std::vector<double>* energy;
};

}  // namespace

InputEnergy::InputEnergy(const ModelConfig& c)
    : qkv(c.n_layers, std::vector<double>(c.d_model, 0.0)),
      o(c.n_layers, std::vector<double>(c.q_dim(), 0.0)),
      gate_up(c.n_layers, std::vector<double>(c.d_model, 0.0)),
      down(c.n_layers, std::vector<double>(c.ffn, 0.0)) {}

void accumulate_input_energy(InputEnergy& energy, const CpuModel<float>& model, const ModelConfig& config) {
  OWLORE_REQUIRE((int)energy.qkv.size() == config.n_layers, "outlier scores: energies for ", energy.qkv.size(),
                 " layers, model has ", config.n_layers);
  for (int l = 0; l < config.n_layers; l++) {
    add_squares(energy.qkv[l], model.matrix_input(l, MatrixInput::qkv), "ln1");
    add_squares(energy.o[l], model.matrix_input(l, MatrixInput::o), "att");
    add_squares(energy.gate_up[l], model.matrix_input(l, MatrixInput::gate_up), "ln2");
    add_squares(energy.down[l], model.matrix_input(l, MatrixInput::down), "h");
  }
  energy.tokens += (int64_t)model.matrix_input(0, MatrixInput::qkv).size() / config.d_model;
}

double layer_outlier_ratio(const ModelLayout& layout, const float* weights, const InputEnergy& energy, int layer,
                           double threshold) {
  const ModelConfig& c = layout.config;
  OWLORE_REQUIRE(layer >= 0 && layer < c.n_layers, "outlier scores: layer ", layer, " outside [0, ", c.n_layers, ")");
  const LayerOffsets& p = layout.layers[layer];
  // q, k, v are back to back in the arena and share their input, as are gate and up: scoring the
  // fused blocks is scoring the 7 matrices (the concatenation order does not change a count).
  const ScoredMatrix matrices[4] = {
      {weights + p.wqkv, (int64_t)c.q_dim() + 2 * c.kv_dim(), c.d_model, &energy.qkv[layer]},
      {weights + p.wo, c.d_model, c.q_dim(), &energy.o[layer]},
      {weights + p.wgate_up, 2 * (int64_t)c.ffn, c.d_model, &energy.gate_up[layer]},
      {weights + p.wdown, c.d_model, c.ffn, &energy.down[layer]}};

  std::vector<std::vector<double>> root(4);
  double sum = 0.0;
  int64_t count = 0;
  for (int k = 0; k < 4; k++) {
    const ScoredMatrix& m = matrices[k];
    root[k].resize(m.cols);
    for (int64_t j = 0; j < m.cols; j++) root[k][j] = std::sqrt((*m.energy)[j]);
    for (int64_t i = 0; i < m.rows; i++)
      for (int64_t j = 0; j < m.cols; j++) sum += std::fabs((double)m.w[i * m.cols + j]) * root[k][j];
    count += m.rows * m.cols;
  }
  const double cut = threshold * sum / (double)count;
  int64_t outliers = 0;
  for (int k = 0; k < 4; k++) {
    const ScoredMatrix& m = matrices[k];
    for (int64_t i = 0; i < m.rows; i++)
      for (int64_t j = 0; j < m.cols; j++) outliers += std::fabs((double)m.w[i * m.cols + j]) * root[k][j] > cut;
  }
  return 100.0 * (double)outliers / (double)count;
}

void check_outlier_calibration(int n_sequences, int seq_len, const OutlierOptions& options) {
  OWLORE_REQUIRE(n_sequences >= 1 && seq_len >= 1, "outlier calibration: expected at least one sequence of one token, got ",
                 n_sequences, " x ", seq_len);
  OWLORE_REQUIRE(options.batch_sequences >= 1, "outlier calibration: batch_sequences must be >= 1, got ",
                 options.batch_sequences);
  OWLORE_REQUIRE(options.threshold > 0.0, "outlier calibration: threshold M must be > 0, got ", options.threshold);
}

std::vector<double> compute_outlier_distribution(const ModelLayout& layout, const float* weights,
                                                 const int32_t* tokens, int n_sequences, int seq_len,
                                                 const OutlierOptions& options) {
  const ModelConfig& c = layout.config;
  check_outlier_calibration(n_sequences, seq_len, options);
  CpuModel<float> model(layout);
  InputEnergy energy(c);
  // Only the activations matter: targets of -1 make the forward skip the LM head's loss.
  std::vector<int32_t> no_targets((int64_t)options.batch_sequences * seq_len, -1);
  for (int first = 0; first < n_sequences; first += options.batch_sequences) {
    const int B = std::min(options.batch_sequences, n_sequences - first);
    model.forward(weights, tokens + (int64_t)first * seq_len, no_targets.data(), B, seq_len, nullptr);
    accumulate_input_energy(energy, model, c);
    if (options.progress) options.progress(first + B, n_sequences);
  }
  std::vector<double> D(c.n_layers);
  for (int l = 0; l < c.n_layers; l++) D[l] = layer_outlier_ratio(layout, weights, energy, l, options.threshold);
  return D;
}

std::function<void(int done, int total)> calibration_progress_printer() {
  return [printed_tenth = -1](int done, int total) mutable {
    const int tenth = (int)((int64_t)done * 10 / total);
    if (tenth == printed_tenth && done != total) return;
    std::fprintf(stderr, "outlier calibration: %d/%d sequences\n", done, total);
    printed_tenth = tenth;
  };
}

void write_outlier_file(const std::string& path, const std::vector<double>& D, const OutlierMetadata& metadata) {
  const nlohmann::json doc = {{"format", "owlore-outliers"},
                              {"version", 1},
                              {"model", metadata.model},
                              {"threshold", metadata.threshold},
                              {"n_sequences", metadata.n_sequences},
                              {"seq_len", metadata.seq_len},
                              {"n_layers", D.size()},
                              {"D", D}};
  // Atomically: a crash or a full disk never leaves a half-written (or empty) file where a run
  // expects one.
  write_file_atomically(path, doc.dump(2) + "\n");
}

OutlierFile read_outlier_file(const std::string& path, int expected_layers) {
  std::ifstream in(path);
  OWLORE_REQUIRE(in.good(), "outlier file ", path, ": cannot open");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("outlier file ", path, ": not valid JSON (", e.what(), ")");
  }
  OWLORE_REQUIRE(doc.is_object() && doc.value("format", "") == "owlore-outliers", "outlier file ", path,
                 ": expected a JSON object with \"format\": \"owlore-outliers\"");
  OWLORE_REQUIRE(doc.value("version", 0) == 1, "outlier file ", path, ": expected version 1");
  OWLORE_REQUIRE(doc.contains("D") && doc["D"].is_array(), "outlier file ", path, ": expected an array \"D\"");
  OutlierFile file;
  for (size_t i = 0; i < doc["D"].size(); i++) {
    const nlohmann::json& v = doc["D"][i];
    OWLORE_REQUIRE(v.is_number() && v.get<double>() >= 0.0 && v.get<double>() <= 100.0, "outlier file ", path,
                   ": D[", i, "] must be a number in [0, 100], got ", v.dump());
    file.D.push_back(v.get<double>());
  }
  OWLORE_REQUIRE(!file.D.empty(), "outlier file ", path, ": \"D\" is empty");
  OWLORE_REQUIRE(doc.value("n_layers", (int64_t)file.D.size()) == (int64_t)file.D.size(), "outlier file ", path,
                 ": n_layers says ", doc.value("n_layers", 0), " but D has ", file.D.size(), " values");
  OWLORE_REQUIRE(expected_layers < 0 || (int)file.D.size() == expected_layers, "outlier file ", path, ": has ",
                 file.D.size(), " layers, the model has ", expected_layers);
  file.metadata.model = doc.value("model", "");
  file.metadata.threshold = doc.value("threshold", 13.0);
  file.metadata.n_sequences = doc.value("n_sequences", 0);
  file.metadata.seq_len = doc.value("seq_len", 0);
  return file;
}

std::vector<double> outlier_sampling_weights(const std::vector<double>& D, double floor_fraction) {
  OWLORE_REQUIRE(!D.empty(), "outlier sampling weights: D is empty");
  OWLORE_REQUIRE(floor_fraction >= 0.0, "outlier sampling weights: floor fraction must be >= 0, got ", floor_fraction);
  double total = 0.0;
  for (size_t i = 0; i < D.size(); i++) {
    OWLORE_REQUIRE(std::isfinite(D[i]) && D[i] >= 0.0, "outlier sampling weights: D[", i, "] = ", D[i],
                   ", expected a finite value >= 0");
    total += D[i];
  }
  if (total == 0.0) return std::vector<double>(D.size(), 1.0);
  const double floor = floor_fraction * total / (double)D.size();
  std::vector<double> w(D.size());
  for (size_t i = 0; i < D.size(); i++) w[i] = std::max(D[i], floor);
  return w;
}

}  // namespace owlore
