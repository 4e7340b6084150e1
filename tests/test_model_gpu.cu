// The GPU model against the CPU model (the twin) on odd shapes: loss, and the weight gradient of
// every tensor, with the CPU running in fp32 on the same bf16-rounded weights. The GPU keeps
// activations in bf16, so the bound is a bf16 one (a few 1e-2 after two layers); each failure
// prints the relative error and the bound.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/tokens.h"
#include "gpu_test_util.h"
#include "kernels/common.cuh"
#include "kernels/ref/ops_ref.h"
#include "model/memory_plan.h"
#include "model/model_cpu.h"
#include "model/model_gpu.h"
#include "test_util.h"

using namespace owlore;

namespace {

// A GPU model on its own memory plan, allocated, bound and holding the weights w.
struct LoadedModel {
  MemoryPlan plan;
  GpuModel gpu;
  LoadedModel(const ModelLayout& layout, const GpuModelOptions& options, const std::vector<float>& w)
      : gpu(layout, options, plan) {
    plan.allocate();
    gpu.bind(plan);
    gpu.upload_weights(w.data());
  }
};

struct Case {
  const char* preset;
  int B, T;
  // > 0: llama3 rope_scaling with original context 32: T reaches past it, and head_dim 64 / 128
  // have pairs in all three bands (wavelength < 8, 8..32, > 32).
  float llama3_factor = 0;
};

class GpuModelVsCpu : public ::testing::TestWithParam<Case> {};

TEST_P(GpuModelVsCpu, LossAndEveryGradientMatchTheTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  ModelConfig cfg = preset_config(c.preset);
  if (c.llama3_factor > 0) cfg.rope_scaling = {RopeScalingType::llama3, c.llama3_factor, 1.0f, 4.0f, 32};
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 7);
  Rng rng(8);
  for (auto& v : w) v += 0.02f * (float)rng.normal();  // norm weights away from 1
  w = test::round_bf16(w);
  const int N = c.B * c.T;
  auto inputs = test::random_tokens(N, cfg.vocab, 9), targets = test::random_tokens(N, cfg.vocab, 10);
  for (int i = 3; i < N; i += 7) targets[i] = kIgnoreIndex;  // some ignored, never all
  int64_t kept = 0;
  for (int t : targets) kept += t >= 0;

  CpuModel<float> cpu(layout);
  int64_t cpu_kept = 0;
  const double cpu_loss = cpu.forward(w.data(), inputs.data(), targets.data(), c.B, c.T, &cpu_kept);
  std::vector<float> cpu_grads(layout.total, 0.0f);
  cpu.backward(cpu_grads.data(), w.data(), TrainMask::all(cfg.n_layers), 1.0f / kept);

  LoadedModel model(layout, GpuModelOptions{c.B, c.T, 50}, w);  // chunk 50: several LM-head chunks
  GpuModel& gpu = model.gpu;
  test::DeviceBuffer<float> grads(layout.total);
  CUDA_CHECK(cudaMemsetAsync(grads.ptr, 0, layout.total * sizeof(float), gpu.stream()));
  const GradTargets g = arena_grad_targets(layout, grads.ptr);
  const double gpu_loss = gpu.forward_backward(inputs.data(), targets.data(), c.B, 1.0f / kept, g,
                                               TrainMask::all(cfg.n_layers));
  const double loss_err = std::abs(gpu_loss - cpu_loss) / std::abs(cpu_loss);
  EXPECT_LE(loss_err, 5e-3) << "summed loss GPU " << gpu_loss << " CPU " << cpu_loss;
  int64_t eval_kept = 0;
  const double eval_loss = gpu.forward_loss(inputs.data(), targets.data(), c.B, &eval_kept);
  EXPECT_EQ(eval_kept, kept);
  EXPECT_NEAR(eval_loss, gpu_loss, 1e-6 * std::abs(gpu_loss)) << "forward_loss and forward_backward disagree";

  const std::vector<float> gpu_grads = grads.download();
  // bf16 activations and gradients through the whole depth: on the H200 errors grew from ~3e-2
  // in the last layer to ~8e-2 at the embedding with 3x-scaled weights. A wiring bound: the
  // fixture test (test_fixtures_gpu) holds the GPU to PyTorch's own bf16 error (DESIGN.md §4).
  const double bound = 5e-2;
  for (const TensorSlot& t : layout.tensors) {
    const double err = test::rel_error(gpu_grads.data() + t.offset, cpu_grads.data() + t.offset, t.numel());
    EXPECT_LE(err, bound) << c.preset << " " << t.name << ": gradient rel error " << err << " > " << bound;
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GpuModelVsCpu,
                         ::testing::Values(Case{"tiny-gpu", 3, 37}, Case{"tiny-gpu", 1, 1}, Case{"tiny-gpu128", 2, 70},
                                           Case{"tiny-gpu", 3, 37, 8.0f}, Case{"tiny-gpu128", 2, 70, 32.0f}),
                         [](const auto& info) {
                           std::string name = std::string(info.param.preset) + "_B" + std::to_string(info.param.B) +
                                              "_T" + std::to_string(info.param.T) +
                                              (info.param.llama3_factor > 0 ? "_llama3" : "");
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

TEST(GpuModel, FrozenLayersGetNoGradient) {
  OWLORE_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = preset_config("tiny-gpu");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 3);
  const int B = 2, T = 19, N = B * T;
  auto inputs = test::random_tokens(N, cfg.vocab, 4), targets = test::random_tokens(N, cfg.vocab, 5);
  LoadedModel model(layout, GpuModelOptions{B, T, 2048}, w);
  GpuModel& gpu = model.gpu;
  test::DeviceBuffer<float> grads(layout.total);
  CUDA_CHECK(cudaMemsetAsync(grads.ptr, 0, layout.total * sizeof(float), gpu.stream()));
  GradTargets g;
  g.final_norm = grads.ptr + layout.final_norm;
  g.lm_head = grads.ptr + layout.lm_head;
  g.layer = {nullptr, grads.ptr + layout.layers[1].begin};
  const TrainMask mask{{false, true}, /*embedding=*/false, /*head=*/true};
  gpu.forward_backward(inputs.data(), targets.data(), B, 1.0f / N, g, mask);
  const std::vector<float> out = grads.download();
  for (const TensorSlot& t : layout.tensors) {
    double sum = 0;
    for (int64_t i = t.offset; i < t.offset + t.numel(); i++) sum += std::abs(out[i]);
    const bool trained = t.layer == 1 || t.name == "model.norm.weight" || t.name == "lm_head.weight";
    if (trained)
      EXPECT_GT(sum, 0.0) << t.name << " trains but got no gradient";
    else
      EXPECT_EQ(sum, 0.0) << t.name << " is frozen but got a gradient";
  }
}

}  // namespace

TEST(GpuModel, RecomputeLevelsGiveTheSameGradients) {
  // Recomputing (ln1, ln2 and the SwiGLU output; or the whole layer from its input) in the
  // backward must reproduce the kept activations: the
  // recomputed norms come from the bf16 residual stream rather than the fused kernel's fp32 sum,
  // so they may differ by a bf16 rounding here and there, far below the bf16 error of the model.
  OWLORE_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = preset_config("tiny-gpu");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 11);
  const int B = 2, T = 45, N = B * T;
  auto inputs = test::random_tokens(N, cfg.vocab, 12), targets = test::random_tokens(N, cfg.vocab, 13);
  std::vector<std::vector<float>> results;
  double losses[3];
  for (Recompute level : {Recompute::none, Recompute::cheap, Recompute::layer}) {
    LoadedModel model(layout, GpuModelOptions{B, T, 2048, level}, w);
    GpuModel& gpu = model.gpu;
    test::DeviceBuffer<float> grads(layout.total);
    CUDA_CHECK(cudaMemsetAsync(grads.ptr, 0, layout.total * sizeof(float), gpu.stream()));
    const GradTargets g = arena_grad_targets(layout, grads.ptr);
    losses[results.size()] =
        gpu.forward_backward(inputs.data(), targets.data(), B, 1.0f / N, g, TrainMask::all(cfg.n_layers));
    results.push_back(grads.download());
  }
  for (int level = 1; level < 3; level++) {
    EXPECT_EQ(losses[level], losses[0]) << "the forward does not depend on the recompute level";
    for (const TensorSlot& t : layout.tensors) {
      const double err = test::rel_error(results[level].data() + t.offset, results[0].data() + t.offset, t.numel());
      EXPECT_LE(err, 2e-3) << t.name << ": recompute level " << level << " changed the gradient by " << err;
    }
  }
}

// Offloaded layer inputs (GpuModelOptions::offload_layer_inputs) change where the inputs wait,
// not what is computed: the same losses and gradients as Recompute::layer keeping them all, over
// steps that use the ring in every way — a full backward (every input fetched back), an
// evaluation forward (no copies), a backward stopping at layer 2 (frozen embedding), one stopping
// at layer 4 (nothing fetched, copies of the forward still pending when the next step writes), a
// smaller batch. Six layers, so that some inputs make the round trip through the host. Two
// shapes: tiny-gpu's odd sizes, and a narrow, long one (C = 128, 64 x 512 tokens) where each
// input is 8 MiB and its copy takes longer than a layer's compute, so that a missing wait —
// a slot rewritten before its copy out finished, or read before its copy in — changes the result.
// Checked on the H200: with both waits deleted, "long" fails (83 failed expectations) while
// "odd", whose copies finish far ahead of the compute, still passes.
struct OffloadCase {
  const char* name;
  int d_model, n_heads, ffn, B, T;
};

class GpuModelOffload : public ::testing::TestWithParam<OffloadCase> {};

TEST_P(GpuModelOffload, SameLossesAndGradientsAsKeepingTheInputs) {
  OWLORE_SKIP_WITHOUT_GPU();
  const OffloadCase shape = GetParam();
  ModelConfig cfg = preset_config("tiny-gpu");
  cfg.n_layers = 6;
  cfg.d_model = shape.d_model;
  cfg.n_heads = shape.n_heads;
  cfg.n_kv_heads = 1;
  cfg.ffn = shape.ffn;
  cfg.validate();
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 21);
  const int B = shape.B, T = shape.T;
  auto layers = [](std::vector<bool> trained, bool embedding) { return TrainMask{trained, embedding, true}; };
  const std::vector<std::pair<int, TrainMask>> steps = {
      {B, TrainMask::all(6)},
      {B, layers({false, false, true, false, true, false}, false)},
      {B - 1, layers({false, false, false, false, true, false}, false)},
      {B - 1, TrainMask::all(6)},
  };
  struct Run {
    std::vector<double> losses;
    std::vector<std::vector<float>> grads;
    size_t activations = 0, pinned = 0;
  };
  auto train = [&](bool offload) {
    Run run;
    LoadedModel model(layout, GpuModelOptions{B, T, 2048, Recompute::layer, offload}, w);
    GpuModel& gpu = model.gpu;
    run.activations = model.plan.bytes(Arena::Activations);
    run.pinned = gpu.pinned_host_bytes();
    test::DeviceBuffer<float> grads(layout.total);
    const GradTargets g = arena_grad_targets(layout, grads.ptr);
    for (size_t i = 0; i < steps.size(); i++) {
      const int b = steps[i].first, N = b * T;
      const auto inputs = test::random_tokens(N, cfg.vocab, 30 + i), targets = test::random_tokens(N, cfg.vocab, 50 + i);
      CUDA_CHECK(cudaMemsetAsync(grads.ptr, 0, layout.total * sizeof(float), gpu.stream()));
      run.losses.push_back(gpu.forward_backward(inputs.data(), targets.data(), b, 1.0f / N, g, steps[i].second));
      run.grads.push_back(grads.download());
      int64_t kept = 0;
      run.losses.push_back(gpu.forward_loss(targets.data(), inputs.data(), b, &kept));  // an evaluation between steps
    }
    return run;
  };
  const Run kept = train(false), offloaded = train(true);
  const size_t input_bytes = (size_t)B * T * cfg.d_model * sizeof(bf16);
  EXPECT_EQ(offloaded.pinned, 6 * input_bytes);
  EXPECT_EQ(kept.pinned, 0u);
  EXPECT_LE(offloaded.activations + 4 * input_bytes, kept.activations) << "four of six inputs leave the GPU";
  ASSERT_EQ(kept.losses.size(), offloaded.losses.size());
  for (size_t i = 0; i < kept.losses.size(); i++) EXPECT_EQ(offloaded.losses[i], kept.losses[i]) << "loss " << i;
  for (size_t i = 0; i < steps.size(); i++)
    for (const TensorSlot& t : layout.tensors) {
      const double err = test::rel_error(offloaded.grads[i].data() + t.offset, kept.grads[i].data() + t.offset, t.numel());
      EXPECT_LE(err, 1e-6) << "step " << i + 1 << ", " << t.name;
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuModelOffload,
                         ::testing::Values(OffloadCase{"odd", 195, 3, 331, 3, 37}, OffloadCase{"long", 128, 2, 96, 64, 512}),
                         [](const auto& info) { return std::string(info.param.name); });

// Weights go up and come back through the staging buffer, chunk by chunk; under
// Recompute::layer that buffer is the shared gate_up (here 50 KB: ~80 chunks), elsewhere its own.
// The round trip must give the bf16-rounded weights, every element, at every level.
TEST(GpuModel, WeightsRoundTripThroughTheStaging) {
  OWLORE_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = preset_config("tiny-gpu");
  const ModelLayout layout(cfg);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 5);
  const std::vector<float> expected = test::round_bf16(w);
  for (Recompute level : {Recompute::none, Recompute::cheap, Recompute::layer}) {
    LoadedModel model(layout, GpuModelOptions{2, 19, 2048, level}, w);
    GpuModel& gpu = model.gpu;
    std::vector<float> back(layout.total, -1.0f);
    gpu.download_weights(back.data());
    int64_t wrong = 0;
    for (int64_t i = 0; i < layout.total; i++) wrong += back[i] != expected[i];
    EXPECT_EQ(wrong, 0) << "recompute level " << (int)level << ": " << wrong << " of " << layout.total << " weights differ";
  }
}
