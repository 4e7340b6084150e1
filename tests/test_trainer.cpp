// End-to-end CPU training runs (the tiny presets on Tiny Shakespeare): loss and validation loss
// must fall, and gradient accumulation must equal one large batch of the same tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/checkpoint.h"
#include "train/schedule.h"
#include "train/trainer.h"

using namespace owlore;

namespace {
std::string shakespeare() { return std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt"; }

std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("owlore_test_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

double mean(const std::vector<double>& x, size_t begin, size_t end) {
  return std::accumulate(x.begin() + begin, x.begin() + end, 0.0) / (double)(end - begin);
}
}  // namespace

TEST(Schedule, WarmupThenCosineToTheFloor) {
  LrSchedule s{1e-3f, 0.1f, 10, 110};
  EXPECT_FLOAT_EQ(s.at(1), 1e-4f);
  EXPECT_FLOAT_EQ(s.at(10), 1e-3f);
  EXPECT_NEAR(s.at(60), 0.55e-3f, 1e-9);  // half way down the cosine
  EXPECT_FLOAT_EQ(s.at(110), 1e-4f);
  for (int step = 11; step < 110; step++) EXPECT_GE(s.at(step), s.at(step + 1));
}

TEST(Trainer, TinyPresetLearnsShakespeare) {
  TrainOptions o;
  o.device = Device::cpu;
  o.preset = "tiny";
  o.data_path = shakespeare();
  o.out_dir = temp_dir("learn");
  o.steps = 120;
  o.batch = 4;
  o.seq = 32;
  o.val_every = 60;
  o.log_every = 40;
  const TrainResult r = run_training(o);
  ASSERT_EQ(r.train_losses.size(), 120u);
  const double first = mean(r.train_losses, 0, 10), last = mean(r.train_losses, 110, 120);
  EXPECT_LT(last, first - 1.5) << "training loss " << first << " -> " << last;
  EXPECT_LT(r.last_val_loss, r.first_val_loss - 1.5)
      << "validation loss " << r.first_val_loss << " -> " << r.last_val_loss;
  // One JSON object per step plus the step-0 validation, each with the promised fields.
  std::ifstream file(o.out_dir + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(file, line)) {
    const auto record = nlohmann::json::parse(line);
    if (lines > 0) {
      for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s"})
        EXPECT_TRUE(record.contains(key)) << "metrics line " << lines << " lacks " << key;
    }
    lines++;
  }
  EXPECT_EQ(lines, 121);
  std::filesystem::remove_all(o.out_dir);
}

TEST(Trainer, AccumulationEqualsOneLargeBatch) {
  // 2 micro-batches of 3 rows and 1 batch of 6 rows see the same rows in the same order, so the
  // trajectories agree up to float summation order.
  TrainOptions a;
  a.device = Device::cpu;
  a.preset = "tiny-tied";
  a.data_path = shakespeare();
  a.steps = 4;
  a.seq = 16;
  a.val_every = 0;
  a.val_batches = 1;
  TrainOptions b = a;
  a.batch = 6, a.grad_accum = 1, a.out_dir = temp_dir("acc_a");
  b.batch = 3, b.grad_accum = 2, b.out_dir = temp_dir("acc_b");
  b.val_batches = 2;  // the same 6 validation rows
  const TrainResult ra = run_training(a), rb = run_training(b);
  for (int i = 0; i < 4; i++) EXPECT_NEAR(ra.train_losses[i], rb.train_losses[i], 2e-5) << "step " << i + 1;
  EXPECT_NEAR(ra.last_val_loss, rb.last_val_loss, 2e-5);
  std::filesystem::remove_all(a.out_dir);
  std::filesystem::remove_all(b.out_dir);
}

TEST(Trainer, BadOptionsNameTheProblem) {
  TrainOptions o;
  o.device = Device::cpu;
  o.preset = "tiny";
  o.data_path = shakespeare();
  o.out_dir = temp_dir("bad");
  auto message = [](const TrainOptions& opts) {
    try {
      run_training(opts);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  TrainOptions x = o;
  x.seq = 100000;
  EXPECT_NE(message(x).find("--seq 100000 does not fit"), std::string::npos) << message(x);
  x = o, x.data_path = "/no/such/file.txt";
  EXPECT_NE(message(x).find("/no/such/file.txt"), std::string::npos) << message(x);
  x = o, x.batch = 0;
  EXPECT_NE(message(x).find("--batch"), std::string::npos) << message(x);
  x = o, x.preset = "llama-9000";
  EXPECT_NE(message(x).find("unknown preset 'llama-9000'"), std::string::npos) << message(x);
}

namespace {
TrainOptions small_run(const std::string& method, const std::string& name) {
  TrainOptions o;
  o.device = Device::cpu;
  o.preset = "tiny";
  o.data_path = shakespeare();
  o.out_dir = temp_dir(name);
  o.method = parse_choice(kMethodChoices, method, "--method");
  o.steps = 100;
  o.batch = 4;
  o.seq = 32;
  o.val_every = 0;
  o.log_every = 50;
  o.gamma = 2;
  o.period = 10;
  o.outlier_samples = 8;
  o.outlier_seq = 32;
  o.rank = 8;
  o.proj_gap = 20;
  return o;
}
}  // namespace

class SampledMethods : public ::testing::TestWithParam<const char*> {};
TEST_P(SampledMethods, LossFallsOnShakespeare) {
  const TrainOptions o = small_run(GetParam(), std::string("method_") + GetParam());
  const TrainResult r = run_training(o);
  const double first = mean(r.train_losses, 0, 10), last = mean(r.train_losses, 90, 100);
  EXPECT_LT(last, first - 1.0) << GetParam() << ": training loss " << first << " -> " << last;
  EXPECT_LT(r.last_val_loss, r.first_val_loss - 1.0) << GetParam() << ": validation loss " << r.first_val_loss
                                                      << " -> " << r.last_val_loss;
  // GaLore methods log their projector refreshes and the energy the projectors capture.
  if (std::string(GetParam()) == "owlore" || std::string(GetParam()) == "galore") {
    std::ifstream file(o.out_dir + "/metrics.jsonl");
    std::string line;
    int refresh_steps = 0;
    while (std::getline(file, line)) {
      const auto record = nlohmann::json::parse(line);
      if (!record.contains("projector_refreshes")) continue;
      refresh_steps++;
      EXPECT_GT(record["captured_energy_min"].get<double>(), 0.0) << line;
      EXPECT_LE(record["captured_energy_mean"].get<double>(), 1.0 + 1e-9) << line;
    }
    EXPECT_GE(refresh_steps, 100 / o.proj_gap) << "refreshes every proj_gap steps of each matrix";
  }
  // Sampled methods log the active layers, exactly gamma of them, on every step.
  if (std::string(GetParam()) != "galore") {
    std::ifstream file(o.out_dir + "/metrics.jsonl");
    std::string line;
    std::getline(file, line);  // step 0
    while (std::getline(file, line)) {
      const auto record = nlohmann::json::parse(line);
      ASSERT_TRUE(record.contains("active_layers")) << line;
      EXPECT_EQ(record["active_layers"].size(), 2u) << line;
    }
  }
  std::filesystem::remove_all(o.out_dir);
}
INSTANTIATE_TEST_SUITE_P(Methods, SampledMethods, ::testing::Values("lisa", "ows", "owlore", "galore"));

TEST(Trainer, LisaWithEveryLayerEveryStepIsFull) {
  // gamma = all layers, K = 1: the sampler always picks everything, so the trajectory is full's.
  TrainOptions full = small_run("full", "lisa_all_full"), lisa = small_run("lisa", "lisa_all_lisa");
  full.steps = lisa.steps = 12;
  lisa.gamma = 3, lisa.period = 1;
  const TrainResult a = run_training(full), b = run_training(lisa);
  for (int i = 0; i < 12; i++) EXPECT_EQ(a.train_losses[i], b.train_losses[i]) << "step " << i + 1;
  EXPECT_EQ(a.last_val_loss, b.last_val_loss);
  std::filesystem::remove_all(full.out_dir);
  std::filesystem::remove_all(lisa.out_dir);
}

TEST(Trainer, SampledMethodsRejectImpossibleGamma) {
  TrainOptions o = small_run("lisa", "bad_gamma");
  o.gamma = 4;  // tiny has 3 decoder layers
  try {
    run_training(o);
    FAIL() << "gamma 4 of 3 layers accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gamma 4 exceeds"), std::string::npos) << e.what();
  }
}

namespace {
std::vector<float> final_weights(const std::string& out_dir) {
  return load_state_bundle(out_dir + "/checkpoint/trainer_state.safetensors").tensors.at("weights");
}
}  // namespace

class ResumeMethods : public ::testing::TestWithParam<const char*> {};
TEST_P(ResumeMethods, HalfThenResumeIsBitExact) {
  // N steps straight, and N/2 + resume + N/2, give identical weights (and losses).
  // "lisa-keep": lisa with --state keep, whose parked state must survive the checkpoint too.
  const std::string param = GetParam();
  const bool keep = param == "lisa-keep";
  TrainOptions straight = small_run(keep ? "lisa" : param, std::string("resume_a_") + param);
  if (keep) straight.state_policy = StatePolicy::keep;
  straight.steps = 14;
  straight.period = 4;  // re-samplings before, at and after the split
  straight.proj_gap = 3;
  straight.val_every = 5;
  TrainOptions half = straight;
  half.out_dir = temp_dir(std::string("resume_b_") + param);
  half.stop_at = 7;
  const TrainResult a = run_training(straight);
  run_training(half);
  TrainOptions rest = half;
  rest.stop_at = 0;
  rest.resume_path = half.out_dir + "/checkpoint";
  const TrainResult b = run_training(rest);
  ASSERT_EQ(b.train_losses.size(), 7u);
  for (int i = 0; i < 7; i++) EXPECT_EQ(a.train_losses[7 + i], b.train_losses[i]) << "step " << 8 + i;
  EXPECT_TRUE(final_weights(straight.out_dir) == final_weights(rest.out_dir)) << "weights differ after resume";
  // The resumed metrics file continues the first one: steps 0..14, each once.
  std::ifstream file(rest.out_dir + "/metrics.jsonl");
  std::string line;
  int expected = 0;
  while (std::getline(file, line)) EXPECT_EQ(nlohmann::json::parse(line)["step"].get<int>(), expected++);
  EXPECT_EQ(expected, 15);
  std::filesystem::remove_all(straight.out_dir);
  std::filesystem::remove_all(half.out_dir);
}
INSTANTIATE_TEST_SUITE_P(Methods, ResumeMethods, ::testing::Values("full", "lisa", "owlore", "lisa-keep"));

TEST(Trainer, ResumeRefusesAnotherRun) {
  TrainOptions o = small_run("full", "resume_other");
  o.steps = 2;
  run_training(o);
  // Each flag that decides the trajectory is named with both values; --steps may change.
  TrainOptions other = o;
  other.batch = 5;
  other.lr = 3e-4f;
  other.steps = 4;
  other.resume_path = o.out_dir + "/checkpoint";
  try {
    run_training(other);
    FAIL() << "resumed a checkpoint of another run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--batch 5 (checkpoint: 4)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--lr \"0.0003\" (checkpoint: \"0.001\")"), std::string::npos) << e.what();
  }
  // Other data (the same path, other contents) is another run too.
  TrainOptions moved = o;
  moved.steps = 4;
  moved.resume_path = o.out_dir + "/checkpoint";
  moved.data_path = o.out_dir + "/other.txt";
  {
    std::ifstream in(shakespeare());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(moved.data_path) << text.substr(text.size() / 3);
  }
  try {
    run_training(moved);
    FAIL() << "resumed on other data";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--data"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(o.out_dir);
}

TEST(Trainer, ResumeSurvivesACutMetricsLineAndRefusesAStepBehindIt) {
  TrainOptions o = small_run("full", "resume_cut");
  o.steps = 8;
  o.stop_at = 4;
  run_training(o);
  {  // a crash in the middle of writing step 5's line
    std::ofstream(o.out_dir + "/metrics.jsonl", std::ios::app) << "{\"step\":5,\"loss\":3.1";
  }
  TrainOptions behind = o;
  behind.resume_path = o.out_dir + "/checkpoint";
  behind.stop_at = 3;  // before the checkpoint's step 4: nothing to run
  try {
    run_training(behind);
    FAIL() << "resumed into a stop before the checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("leaves nothing to run"), std::string::npos) << e.what();
  }
  TrainOptions rest = o;
  rest.resume_path = o.out_dir + "/checkpoint";
  rest.stop_at = 0;
  const TrainResult r = run_training(rest);
  EXPECT_EQ(r.train_losses.size(), 4u);
  EXPECT_GT(r.first_val_loss, 0.0) << "the step-0 validation loss of the first run is kept";
  std::ifstream file(o.out_dir + "/metrics.jsonl");
  std::string line;
  int expected = 0;
  while (std::getline(file, line)) EXPECT_EQ(nlohmann::json::parse(line)["step"].get<int>(), expected++) << line;
  EXPECT_EQ(expected, 9);
  std::filesystem::remove_all(o.out_dir);
}
