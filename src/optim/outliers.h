// Layerwise outlier distribution D_ℓ (DESIGN.md §1; OWL, Yin et al. 2024, §3, used by OwLore §3.1):
// run calibration batches through the frozen model; for each of the 7 matrices of block ℓ
// (q, k, v, o, gate, up, down) accumulate s_j = Σ_tokens x_j² of the matrix's input channel j;
// score A_ij = |W_ij| · sqrt(s_j); concatenate the scores of the 7 matrices;
//     D_ℓ = 100 · #{A > M · mean(A)} / #A,          M = threshold (13 in OwLore).
// The mean is over the concatenation (all of the layer's matrix entries), not per matrix.
// OWL normalizes s_j by the number of calibration tokens; every matrix of a layer sees the same
// tokens, so that factor scales all of A uniformly and leaves D unchanged — we keep the raw sums.
// s_j is accumulated in double (DESIGN says fp32; double removes the question of summation order
// over 128 × 2048 tokens at no cost on the CPU).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/layout.h"
#include "model/model_cpu.h"

namespace owlore {

// s_j per layer for each matrix input: q/k/v share ln1 (C channels), o reads att (q_dim),
// gate/up share ln2 (C), down reads h (ffn).
struct InputEnergy {
  std::vector<std::vector<double>> qkv, o, gate_up, down;  // [layer][input channel]
  int64_t tokens = 0;                                      // rows accumulated so far
  explicit InputEnergy(const ModelConfig& config);
};

// Adds Σ_rows x_j² of every matrix input the model saved in its last forward (rows = B*T).
void accumulate_input_energy(InputEnergy& energy, const CpuModel<float>& model, const ModelConfig& config);

// D_ℓ of one layer from its weights (fp32 arena, layout offsets) and the accumulated energies.
double layer_outlier_ratio(const ModelLayout& layout, const float* weights, const InputEnergy& energy, int layer,
                           double threshold);

struct OutlierOptions {
  double threshold = 13.0;   // M (OwLore: 13)
  int batch_sequences = 4;   // sequences per forward (memory only; the result does not depend on it)
  // Called after each batch with the sequences done so far and the total (empty: silent).
  std::function<void(int done, int total)> progress;
};

// A progress callback for OutlierOptions: a line on stderr at every tenth of the calibration and
// at its end (whole lines, so a log file reads as a terminal does).
std::function<void(int done, int total)> calibration_progress_printer();

// Throws naming what is wrong with a calibration's sizes or options (both backends check them).
void check_outlier_calibration(int n_sequences, int seq_len, const OutlierOptions& options);

// The whole calibration: tokens (n_sequences, seq_len), row-major, through the frozen model in
// batches of batch_sequences; returns D (one value in [0, 100] per decoder layer).
std::vector<double> compute_outlier_distribution(const ModelLayout& layout, const float* weights,
                                                 const int32_t* tokens, int n_sequences, int seq_len,
                                                 const OutlierOptions& options);

struct OutlierMetadata {
  std::string model;              // preset or checkpoint name, informational
  double threshold = 13.0;        // M
  int n_sequences = 0, seq_len = 0;
};
struct OutlierFile {
  std::vector<double> D;          // per decoder layer, percent
  OutlierMetadata metadata;
};

// A small JSON file: {"format": "owlore-outliers", "version": 1, "model": ..., "threshold": ...,
// "n_sequences": ..., "seq_len": ..., "n_layers": L, "D": [...]}. Errors name the file.
void write_outlier_file(const std::string& path, const std::vector<double>& D, const OutlierMetadata& metadata);
// Reads and validates the file; expected_layers >= 0 also checks the layer count against the model.
OutlierFile read_outlier_file(const std::string& path, int expected_layers = -1);

// Sampling weights for the owlore/ows samplers, p_ℓ ∝ weight_ℓ.
// The OwLore code uses p = D/ΣD directly; numpy then raises when fewer than γ layers have D > 0,
// and a layer with D = 0 can never train. We keep D as is except:
//   - Σ D = 0 (no outliers anywhere, e.g. a freshly initialized model): uniform weights (= lisa);
//   - each weight is floored at floor_fraction · mean(D), so every layer stays drawable.
// With the default 1% the floor never binds on real models (LLaMA-2-7B's smallest D is 25% of
// its mean), so there the result is exactly the reference's p; floor_fraction = 0 disables it.
std::vector<double> outlier_sampling_weights(const std::vector<double>& D, double floor_fraction = 0.01);

}  // namespace owlore
