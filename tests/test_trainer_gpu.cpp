// The GPU trainer against the CPU trainer on a tiny preset: the same data, schedule and
// initialization give the same loss curve within bf16 rounding (the GPU trains bf16 weights
// with stochastic rounding, the CPU fp32 weights).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "gpu_test_util.h"
#include "train/trainer.h"

using namespace owlore;

TEST(TrainerGpu, TwentyStepsMatchTheCpuTrainer) {
  OWLORE_SKIP_WITHOUT_GPU();
  TrainOptions o;
  o.preset = "tiny-gpu";
  o.data_path = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
  o.steps = 20;
  o.batch = 4;
  o.seq = 64;
  o.lr = 2e-3f;
  o.val_every = 0;
  o.val_batches = 2;
  o.log_every = 5;
  TrainOptions gpu = o, cpu = o;
  gpu.device = "cuda", gpu.out_dir = std::filesystem::temp_directory_path() / "owlore_trainer_gpu";
  cpu.device = "cpu", cpu.out_dir = std::filesystem::temp_directory_path() / "owlore_trainer_cpu";
  const TrainResult rg = run_training(gpu), rc = run_training(cpu);
  ASSERT_EQ(rg.train_losses.size(), 20u);
  for (int i = 0; i < 20; i++) {
    const double rel = std::abs(rg.train_losses[i] - rc.train_losses[i]) / rc.train_losses[i];
    EXPECT_LE(rel, 1.5e-2) << "step " << i + 1 << ": GPU loss " << rg.train_losses[i] << ", CPU " << rc.train_losses[i];
  }
  EXPECT_LT(rg.train_losses.back(), rg.train_losses.front() - 0.5) << "GPU loss did not fall";
  EXPECT_NEAR(rg.last_val_loss, rc.last_val_loss, 2e-2 * rc.last_val_loss);
}
