// The layerwise outlier distribution D_ℓ on the GPU (DESIGN.md §1): the calibration forward runs
// through GpuModel (bf16 weights and activations), the input energies s_j accumulate on the device
// (kernels/outliers.cuh column_sum_squares, fp32), and each layer is scored there (outlier_ratio).
// Same definition and result format as compute_outlier_distribution (optim/outliers.h), the CPU
// reference. The values differ slightly from the CPU's fp32 D: the GPU scores bf16 weights with
// energies from bf16 activations, so a score A_ij moves by a fraction of a percent and the entries
// within that band of the cut M·mean(A) can cross it (tests/test_outliers_gpu.cu bounds this).
// Host-facing header: no CUDA code.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layout.h"
#include "optim/outliers.h"

namespace owlore {

// tokens (n_sequences, seq_len) row-major on the host, weights the fp32 arena (layout.total).
// Runs options.batch_sequences sequences per forward; returns D (one value in [0, 100] per layer).
// Throws when no CUDA device is present or the model's head_dim is not one the GPU attention has.
std::vector<double> compute_outlier_distribution_gpu(const ModelLayout& layout, const std::vector<float>& weights,
                                                     const int32_t* tokens, int n_sequences, int seq_len,
                                                     const OutlierOptions& options);

}  // namespace owlore
