// The GPU trainer against the CPU trainer on a tiny preset: the same data, schedule and
// initialization give the same loss curve within bf16 rounding (the GPU trains bf16 weights
// with stochastic rounding, the CPU fp32 weights).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "gpu_test_util.h"
#include "train/trainer.h"

using namespace owlore;

namespace {
void expect_twenty_steps_like_the_cpu(int batch, int grad_accum, const std::string& name) {
  TrainOptions o;
  o.preset = "tiny-gpu";
  o.data_path = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
  o.steps = 20;
  o.batch = batch;
  o.grad_accum = grad_accum;
  o.seq = 64;
  o.lr = 2e-3f;
  o.val_every = 0;
  o.val_batches = 2;
  o.log_every = 5;
  TrainOptions gpu = o, cpu = o;
  gpu.device = Device::cuda, gpu.out_dir = std::filesystem::temp_directory_path() / ("owlore_trainer_gpu_" + name);
  cpu.device = Device::cpu, cpu.out_dir = std::filesystem::temp_directory_path() / ("owlore_trainer_cpu_" + name);
  const TrainResult rg = run_training(gpu), rc = run_training(cpu);
  ASSERT_EQ(rg.train_losses.size(), 20u);
  for (int i = 0; i < 20; i++) {
    const double rel = std::abs(rg.train_losses[i] - rc.train_losses[i]) / rc.train_losses[i];
    EXPECT_LE(rel, 1.5e-2) << "step " << i + 1 << ": GPU loss " << rg.train_losses[i] << ", CPU " << rc.train_losses[i];
  }
  EXPECT_LT(rg.train_losses.back(), rg.train_losses.front() - 0.5) << "GPU loss did not fall";
  EXPECT_NEAR(rg.last_val_loss, rc.last_val_loss, 2e-2 * rc.last_val_loss);
}
}  // namespace

// tiny-gpu is untied: its embedding's gradient is sparse on the GPU (the rows of the step's 256
// tokens of 301), dense on the CPU.
TEST(TrainerGpu, TwentyStepsMatchTheCpuTrainer) {
  OWLORE_SKIP_WITHOUT_GPU();
  expect_twenty_steps_like_the_cpu(4, 1, "one");
}

// Two micro-batches per step: the second adds into the sparse rows the first one made.
TEST(TrainerGpu, TwoMicroBatchesPerStepMatchTheCpuTrainer) {
  OWLORE_SKIP_WITHOUT_GPU();
  expect_twenty_steps_like_the_cpu(2, 2, "two");
}

// owlore (outlier-weighted sampling + GaLore-Adam on the sampled layers' matrices) on the GPU
// against the CPU trainer: the same sampled layers (both read the D the CPU run computed), the same
// refresh steps (proj_gap 4 of each matrix's own steps, with a re-sampling every 3 steps), so the
// loss curves agree within bf16 rounding: both orient the singular vectors the same way
// (largest-magnitude entry positive), so the moments kept across a refresh mean the same thing.
TEST(TrainerGpu, OwloreTwelveStepsMatchTheCpuTrainer) {
  OWLORE_SKIP_WITHOUT_GPU();
  TrainOptions o;
  o.preset = "tiny-gpu";
  o.data_path = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
  o.method = Method::owlore;
  o.steps = 12;
  o.batch = 4;
  o.seq = 64;
  o.lr = 2e-3f;
  o.val_every = 0;
  o.val_batches = 2;
  o.log_every = 4;
  o.gamma = 1;
  o.period = 3;
  o.rank = 8;
  o.proj_gap = 4;
  o.outlier_samples = 8;
  o.outlier_seq = 64;
  TrainOptions gpu = o, cpu = o;
  cpu.device = Device::cpu, cpu.out_dir = std::filesystem::temp_directory_path() / "owlore_trainer_owlore_cpu";
  gpu.device = Device::cuda, gpu.out_dir = std::filesystem::temp_directory_path() / "owlore_trainer_owlore_gpu";
  const TrainResult rc = run_training(cpu);
  gpu.outliers_path = cpu.out_dir + "/outliers.json";  // the CPU's D: both sample the same layers
  const TrainResult rg = run_training(gpu);
  ASSERT_EQ(rg.train_losses.size(), 12u);
  ASSERT_EQ(rc.train_losses.size(), 12u);
  for (int i = 0; i < 12; i++) {
    const double rel = std::abs(rg.train_losses[i] - rc.train_losses[i]) / rc.train_losses[i];
    EXPECT_LE(rel, 2e-2) << "step " << i + 1 << ": GPU loss " << rg.train_losses[i] << ", CPU " << rc.train_losses[i];
  }
  EXPECT_LT(rg.train_losses.back(), rg.train_losses.front()) << "GPU loss did not fall";
  EXPECT_LT(rc.train_losses.back(), rc.train_losses.front()) << "CPU loss did not fall";
  std::filesystem::remove_all(cpu.out_dir);
  std::filesystem::remove_all(gpu.out_dir);
}
