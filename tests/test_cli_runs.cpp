// What a run leaves behind when it fails, is stopped, or is run again: the last good checkpoint
// is never replaced by a non-finite one nor deleted, a failed save leaves nothing that looks
// usable, SIGTERM saves before exiting, an earlier run is not overwritten unasked, and a run can be
// continued or configured without restating its flags. Every run here is the CPU trainer on the
// tiny preset.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "cli_test_util.h"
#include "io/checkpoint.h"

using namespace owlore;
namespace fs = std::filesystem;

namespace {

const std::string kData = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
const std::string kTiny = "--preset tiny --device cpu --data " + kData + " --batch 2 --seq 32 --val-batches 1 ";

test::CliRun run(const std::string& args) { return test::run_owlore(args, 300); }

// A fresh directory for one test, removed when it ends.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("owlore_runs_" + name + "_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// The names in a directory.
std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// The linked checkpoint loads and its weights are finite; returns its step.
int expect_loadable_finite_checkpoint(const fs::path& out) {
  const fs::path ckpt = out / "checkpoint";
  EXPECT_TRUE(fs::is_symlink(ckpt)) << ckpt;
  const LoadedModel model = load_model(ckpt.string());
  for (float w : model.weights) EXPECT_TRUE(std::isfinite(w));
  const StateBundle state = load_state_bundle((ckpt / "trainer_state.safetensors").string());
  return state.meta.at("step").get<int>();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(CliRuns, ADivergingRunFailsAndKeepsTheLastFiniteCheckpoint) {
  // lr 1e6 without clipping: step 1 is finite (and saved); by step 2 the weights have blown up,
  // so its gradient is not finite or is exactly 0 (a collapsed model).
  TempDir dir("diverge");
  const fs::path out = dir.path / "run";
  const test::CliRun r = run("train " + kTiny + "--lr 1e6 --clip 0 --warmup 0 --steps 6 --save-every 1 --val-every 0 " +
                             "--keep-checkpoints 3 --out " + out.string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(r.output.find("not finite") != std::string::npos || r.output.find("collapsed") != std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("the run stops without saving"), std::string::npos) << r.output;
  ASSERT_TRUE(fs::exists(out / "checkpoint")) << r.output;
  const int step = expect_loadable_finite_checkpoint(out);
  EXPECT_GE(step, 1);
  EXPECT_LT(step, 6);
  for (const std::string& name : entries(out)) EXPECT_EQ(name.find(".partial"), std::string::npos) << name;
}

TEST(CliRuns, ANonFiniteValidationLossFailsWithoutACheckpoint) {
  // One step at lr 1e30: the gradient is finite, the updated weights make the validation loss NaN.
  TempDir dir("nanval");
  const fs::path out = dir.path / "run";
  const test::CliRun r = run("train " + kTiny + "--lr 1e30 --clip 0 --warmup 0 --steps 1 --out " + out.string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stops without saving"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out / "checkpoint")) << r.output;
  for (const std::string& name : entries(out)) EXPECT_EQ(name.rfind("checkpoint-", 0), std::string::npos) << name;
}

TEST(CliRuns, AnEarlierRunIsRefusedUnlessOverwritten) {
  TempDir dir("again");
  const fs::path out = dir.path / "run";
  const std::string args = "train " + kTiny + "--steps 2 --val-every 0 --out " + out.string();
  ASSERT_EQ(run(args).exit_code, 0);
  const std::string metrics = read_text(out / "metrics.jsonl");
  const test::CliRun again = run(args);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find(out.string() + " holds an earlier run"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("--overwrite"), std::string::npos) << again.output;
  EXPECT_EQ(read_text(out / "metrics.jsonl"), metrics) << "the refused run touched the earlier one";
  EXPECT_EQ(expect_loadable_finite_checkpoint(out), 2);
  const test::CliRun replaced = run(args + " --overwrite --steps 3");
  EXPECT_EQ(replaced.exit_code, 0) << replaced.output;
  EXPECT_EQ(expect_loadable_finite_checkpoint(out), 3);
  EXPECT_FALSE(fs::exists(out / "checkpoint-2")) << "--overwrite keeps the replaced run's checkpoint";
}

TEST(CliRuns, KeepCheckpointsKeepsTheNewestAndResumeClearsKilledSaves) {
  TempDir dir("keep");
  const fs::path out = dir.path / "run";
  const test::CliRun r = run("train " + kTiny + "--steps 5 --save-every 1 --val-every 0 --keep-checkpoints 2 --out " +
                             out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(entries(out), (std::set<std::string>{"checkpoint", "checkpoint-4", "checkpoint-5", "config.toml",
                                                 "metrics.jsonl"}));
  // A save killed half-way leaves checkpoint-N.partial: never linked, removed when the run resumes.
  fs::create_directories(out / "checkpoint-6.partial");
  std::ofstream(out / "checkpoint-6.partial" / "model.safetensors") << "half";
  const test::CliRun resumed = run("train --resume " + out.string() + " --steps 7");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_EQ(entries(out), (std::set<std::string>{"checkpoint", "checkpoint-6", "checkpoint-7", "config.toml",
                                                 "metrics.jsonl"}));
  EXPECT_EQ(expect_loadable_finite_checkpoint(out), 7);
}

TEST(CliRuns, ResumeNeedsNoRestatedFlagsAndExplainsAnEmptyRunDirectory) {
  TempDir dir("resume");
  const fs::path out = dir.path / "run";
  ASSERT_EQ(run("train " + kTiny + "--method lisa --gamma 1 --period 2 --lr 2e-3 --steps 3 --val-every 0 --out " +
                out.string())
                .exit_code,
            0);
  const std::string config = read_text(out / "config.toml");
  for (const char* line : {"[train]", "method=\"lisa\"", "lr=2e-3", "device=\"cpu\""})
    EXPECT_NE(config.find(line), std::string::npos) << line << "\n" << config;
  const test::CliRun resumed = run("train --resume " + out.string() + " --steps 5");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("method lisa"), std::string::npos) << resumed.output;
  EXPECT_EQ(expect_loadable_finite_checkpoint(out), 5);
  const test::CliRun changed = run("train --resume " + out.string() + " --steps 6 --lr 1e-3");
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.output.find("--lr"), std::string::npos) << changed.output;
  // A run directory without a checkpoint (stopped before its first save): the error says so.
  fs::create_directories(dir.path / "empty");
  const test::CliRun empty = run("train --resume " + (dir.path / "empty").string());
  EXPECT_NE(empty.exit_code, 0);
  EXPECT_NE(empty.output.find("no trainer_state.safetensors in it"), std::string::npos) << empty.output;
}

TEST(CliRuns, AConfigFileSuppliesFlagsAndTheCommandLineWins) {
  TempDir dir("config");
  const fs::path file = dir.path / "run.toml";
  std::ofstream(file) << "[train]\npreset=\"tiny\"\ndevice=\"cpu\"\nsteps=3\nbatch=2\nseq=32\nlr=0.002\n"
                      << "val-every=0\ndata=\"" << kData << "\"\n";
  const fs::path out = dir.path / "run";
  const test::CliRun r = run("--config " + file.string() + " train --steps 2 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("done: step 2 of 2"), std::string::npos) << r.output;
  EXPECT_NE(read_text(out / "config.toml").find("lr=0.002"), std::string::npos);
  std::ofstream(dir.path / "bad.toml") << "[train]\nstpes=3\n";
  const test::CliRun bad = run("--config " + (dir.path / "bad.toml").string() + " train --out " + out.string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("stpes"), std::string::npos) << bad.output;
}

TEST(CliRuns, SigtermSavesACheckpointAndExitsWith143) {
  // The signal arrives twice within a millisecond, as timeout(1) or Slurm send it (to the process
  // and to its group): one stop, still saved.
  TempDir dir("sigterm");
  const fs::path out = dir.path / "run";
  const std::string args = "train " + kTiny + "--steps 100000 --val-every 0 --log-every 1 --out " + out.string();
  const std::string log = (dir.path / "log").string();
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + std::string(OWLORE_BINARY) + " " + args + " >" + log + " 2>&1").c_str(),
          (char*)nullptr);
    _exit(127);
  }
  // Wait for the third step's line: the loop is running.
  for (int i = 0; i < 600 && read_text(log).find("step      3/") == std::string::npos; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(pid, SIGTERM);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string output = read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by the signal instead of stopping:\n" << output;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << output;
  EXPECT_NE(output.find("stopped: SIGTERM after step"), std::string::npos) << output;
  const int step = expect_loadable_finite_checkpoint(out);
  EXPECT_GE(step, 3);
  const test::CliRun resumed = run("train --resume " + out.string() + " --steps " + std::to_string(step + 1));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(expect_loadable_finite_checkpoint(out), step + 1);
}

TEST(CliRuns, AFullDiskFailsTheSaveAndLeavesNothingThatLooksUsable) {
  // ulimit -f: writes past the limit fail with EFBIG, as on a full disk (SIGXFSZ ignored, so the
  // write returns the error instead of killing the process).
  TempDir dir("full");
  const fs::path out = dir.path / "run";
  const auto limited = [&](const std::string& blocks, const std::string& args) {
    const std::string cmd = "trap '' XFSZ; ulimit -f " + blocks + "; exec " + std::string(OWLORE_BINARY) + " " + args;
    FILE* pipe = popen(("sh -c \"" + cmd + "\" 2>&1").c_str(), "r");
    std::string text;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
    const int status = pclose(pipe);
    return test::CliRun{WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
  };
  // 64 blocks hold the metrics and config, not the tiny model's ~1 MB checkpoint.
  const test::CliRun r = limited("64", "train " + kTiny + "--steps 2 --val-every 0 --out " + out.string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out / "checkpoint")) << r.output;
  for (const std::string& name : entries(out)) EXPECT_EQ(name.rfind("checkpoint-", 0), std::string::npos) << name;
  // The outlier file: no "wrote", no empty file where a run would look for one.
  const fs::path d = dir.path / "d.json";
  const test::CliRun o = limited("0", "outliers " + std::string("--preset tiny --device cpu --data ") + kData +
                                          " --samples 2 --seq 32 -o " + d.string());
  EXPECT_NE(o.exit_code, 0) << o.output;
  EXPECT_EQ(o.output.find("wrote "), std::string::npos) << o.output;
  EXPECT_FALSE(fs::exists(d)) << o.output;
}

TEST(CliRuns, EvalScoresTheHeldOutTail) {
  const std::string args = "eval --preset tiny --device cpu --seq 32 --batch 4 --max-batches 2 --data " + kData;
  const test::CliRun val = run(args + " --split val"), train = run(args + " --split train");
  ASSERT_EQ(val.exit_code, 0) << val.output;
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(val.output.find("\"split\":\"val\""), std::string::npos) << val.output;
  EXPECT_NE(train.output.find("\"split\":\"train\""), std::string::npos) << train.output;
  // Different sequences: the losses differ.
  const auto loss = [](const std::string& s) { return std::stod(s.substr(s.find("\"loss\":") + 7)); };
  EXPECT_NE(loss(val.output), loss(train.output));
}
