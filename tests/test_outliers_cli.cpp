// `owlore outliers` end to end on the CPU: the file it writes reads back with the metadata of the
// run, its D is exactly the library's D on the same calibration rows (the data packed as train
// packs it, the first --samples rows of --seq tokens), the data-limited sample count is reported
// and recorded, and bad flags fail on one line.
#include <gtest/gtest.h>

#include "cli_test_util.h"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "io/dataset.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "optim/outliers.h"
#include "train/trainer.h"

using namespace owlore;

namespace {
using owlore::test::CliRun;
CliRun run(const std::string& args) { return owlore::test::run_owlore(args); }

const std::string kData = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("owlore_outliers_cli_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// What the command computes, through the library: preset weights as `eval --preset` makes them,
// byte-level tokens packed with train's default held-out fraction, the first n rows.
std::vector<double> library_D(const std::string& data_path, int samples, int seq, double threshold, int* used) {
  const ModelConfig config = preset_config("tiny");
  const ModelLayout layout(config);
  std::vector<float> w(layout.total);
  init_weights(layout, w.data(), 1);
  const Dataset data = pack_dataset(byte_tokens(read_text_file(data_path)), {}, seq, TrainOptions{}.val_fraction);
  const int n = (int)std::min<int64_t>(samples, data.train.count());
  std::vector<int32_t> tokens((int64_t)n * seq);
  for (int r = 0; r < n; r++)
    std::copy_n(data.train.tokens.begin() + (int64_t)r * data.train.row_len, seq, tokens.begin() + (int64_t)r * seq);
  OutlierOptions options;
  options.threshold = threshold;
  *used = n;
  return compute_outlier_distribution(layout, w.data(), tokens.data(), n, seq, options);
}
}  // namespace

TEST(OutliersCli, WritesTheFileTheTrainerReads) {
  const std::string out = temp_path("d.json");
  const CliRun r = run("outliers --preset tiny --device cpu --data " + kData + " --samples 4 --seq 64 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const OutlierFile file = read_outlier_file(out, preset_config("tiny").n_layers);
  EXPECT_EQ(file.metadata.model, "tiny");
  EXPECT_EQ(file.metadata.n_sequences, 4);
  EXPECT_EQ(file.metadata.seq_len, 64);
  EXPECT_DOUBLE_EQ(file.metadata.threshold, 13.0);
  int used = 0;
  EXPECT_EQ(file.D, library_D(kData, 4, 64, 13.0, &used));  // JSON doubles round-trip exactly
  EXPECT_NE(r.output.find("4 of 4 requested sequences x 64 tokens"), std::string::npos) << r.output;
  for (const char* column : {"D (%)", "sampling p", "wrote " }) EXPECT_NE(r.output.find(column), std::string::npos) << r.output;
  std::remove(out.c_str());
}

TEST(OutliersCli, CalibrationPrintsProgress) {
  // 10 sequences in batches of 3: a line at each tenth a batch reaches (3, 6, 9) and at the end.
  const std::string out = temp_path("p.json");
  const CliRun r = run("outliers --preset tiny --device cpu --data " + kData + " --samples 10 --batch 3 --seq 32 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"outlier calibration: 3/10 sequences\n", "outlier calibration: 6/10 sequences\n",
                           "outlier calibration: 9/10 sequences\n", "outlier calibration: 10/10 sequences\n"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << r.output;
  std::remove(out.c_str());
}

TEST(OutliersCli, NonZeroScoresAndFewerRowsThanRequested) {
  // A short text: fewer training rows than --samples, all of them used and the count reported.
  // A low threshold M = 3 makes fresh weights show outliers, so D is not all zeros.
  const std::string text = temp_path("short.txt"), out = temp_path("short.json");
  {
    std::ofstream f(text);
    for (int i = 0; i < 30; i++) f << "To be, or not to be, that is the question. " << i << "\n";
  }
  const CliRun r = run("outliers --preset tiny --data " + text + " --samples 100 --seq 32 --threshold 3 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int used = 0;
  const std::vector<double> expected = library_D(text, 100, 32, 3.0, &used);
  ASSERT_LT(used, 100);
  const OutlierFile file = read_outlier_file(out, 3);
  EXPECT_EQ(file.metadata.n_sequences, used);
  EXPECT_EQ(file.D, expected);
  double total = 0;
  for (double d : file.D) total += d;
  EXPECT_GT(total, 0.0) << "M = 3 should flag some entries of fresh weights";
  EXPECT_NE(r.output.find(std::to_string(used) + " of 100 requested sequences"), std::string::npos) << r.output;
  std::remove(text.c_str());
  std::remove(out.c_str());
}

TEST(OutliersCli, DefaultSeqIsClampedToTheModelsContext) {
  // The default --seq 2048 exceeds tiny's context of 256: calibrate on 256 and say so.
  const std::string out = temp_path("clamped.json");
  const CliRun r = run("outliers --preset tiny --data " + kData + " --samples 2 -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--seq 2048 exceeds the model's context of 256 tokens: calibrating on 256"), std::string::npos)
      << r.output;
  EXPECT_EQ(read_outlier_file(out, 3).metadata.seq_len, 256);
  std::remove(out.c_str());
}

TEST(OutliersCli, BadInputIsOneLineAndNonZero) {
  struct Case {
    std::string args, expected;
  } cases[] = {
      {"outliers --preset tiny --data " + kData, "--out is required"},
      {"outliers --preset tiny -o /tmp/x.json", "--data is required"},
      {"outliers --data " + kData + " -o /tmp/x.json", "give exactly one of --preset and --model"},
      {"outliers --preset tiny --device tpu --data " + kData + " -o /tmp/x.json", "--device: unknown value 'tpu' (expected auto, cpu or cuda)"},
      {"outliers --preset tiny --threshold 0 --data " + kData + " -o /tmp/x.json", "--threshold must be > 0"},
      {"outliers --preset tiny --seq 0 --data " + kData + " -o /tmp/x.json", "--seq must be >= 1"},
      {"outliers --preset tiny --data /missing.txt -o /tmp/x.json", "/missing.txt: cannot open"},
  };
  for (const Case& c : cases) {
    const CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
  }
}
