// The binary's contract with its users: --help lists every flag with its default, bad input is
// one line on stderr naming the problem, and the exit code is non-zero.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {
using owlore::test::CliRun;
CliRun run(const std::string& args) { return owlore::test::run_owlore(args); }

const std::string kData = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
}  // namespace

TEST(Cli, HelpListsEveryTrainFlagWithItsDefault) {
  const CliRun r = run("train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--preset", "--model", "--data", "--device NAME=auto", "--method NAME=full", "--steps INT=200",
                           "--eps FLOAT=1e-06", "--keep-checkpoints INT=1", "--overwrite", "--resume",
                           "--batch", "--seq", "--grad-accum", "--lr", "--warmup", "--clip", "--val-every", "--seed"})
    EXPECT_NE(r.output.find(flag), std::string::npos) << "train --help lacks " << flag << "\n" << r.output;
}

TEST(Cli, BadInputIsOneLineAndNonZero) {
  struct Case {
    std::string args, expected;
  } cases[] = {
      {"train --preset tiny --data /missing.txt", "/missing.txt: cannot open data file"},
      {"train --preset nope --data " + kData, "unknown preset 'nope'"},
      {"train --preset tiny --method sgd --data " + kData, "--method: unknown value 'sgd' (expected full, lisa"},
      {"train --preset tiny --seq 4096 --data " + kData, "--seq 4096 does not fit"},
      {"train --preset tiny --steps many --data " + kData, "--steps"},
      {"train --preset tiny --batch 1.5 --data " + kData, "--batch"},
      {"train --preset tiny", "--data is required"},
      {"train --preset tiny --device cuda --offload-activations --data " + kData,
       "--offload-activations needs --recompute layer"},
      {"train --preset tiny --device cpu --offload-activations --recompute layer --data " + kData,
       "no meaning with --device cpu"},
      {"train --preset tiny --device cpu --recompute layer --data " + kData, "--recompute layer is a GPU option"},
      // Values that would silently mean something else.
      {"train --preset tiny --seed '' --data " + kData, "--seed: an empty value is not allowed"},
      {"train --preset tiny --steps= --data " + kData, "--steps"},
      {"train --preset tiny --eps -1 --data " + kData, "--eps must be a finite number in (0, 1]"},
      {"train --preset tiny --eps 0 --data " + kData, "--eps must be"},
      {"train --preset tiny --weight-decay nan --data " + kData, "--weight-decay must be a finite number >= 0"},
      {"train --preset tiny --weight-decay -0.1 --data " + kData, "--weight-decay must be"},
      {"train --preset tiny --galore-scale inf --method galore --data " + kData, "--galore-scale must be a finite"},
      {"train --preset tiny --lr inf --data " + kData, "--lr must be a finite number > 0"},
      {"train --preset tiny --clip nan --data " + kData, "--clip must be a finite number"},
      {"train --preset tiny --grad-accum 2147483647 --data " + kData, "tokens per step, more than"},
      // Flags that do nothing for the method or the device are refused, not ignored.
      {"train --preset tiny --rank 8 --data " + kData, "--rank has no effect with --method full"},
      {"train --preset tiny --gamma 2 --data " + kData, "--gamma has no effect with --method full"},
      {"train --preset tiny --method lisa --outlier-samples 4 --data " + kData,
       "--outlier-samples has no effect with --method lisa"},
      {"train --preset tiny --method galore --state keep --data " + kData, "--state has no effect with --method galore"},
      {"train --preset tiny --device cpu --moments bf16 --data " + kData, "--moments has no effect with --device cpu"},
      {"train --preset tiny --device cpu --lm-head-chunk 64 --data " + kData, "--lm-head-chunk has no effect"},
      {"frobnicate", "frobnicate"},
  };
  for (const Case& c : cases) {
    const CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
  }
}

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "io/checkpoint.h"
#include "model/layout.h"
#include "test_util.h"

#include <fstream>
#include <sys/stat.h>

using namespace owlore;

TEST(Cli, KilledDuringCheckpointingLeavesALoadableCheckpointAndResumes) {
  // A checkpoint every step, killed (SIGKILL) at varying moments: <out>/checkpoint must always
  // point at a complete checkpoint that loads, and --resume must continue from it.
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("owlore_kill_" + std::to_string(getpid()));
  const std::string common = "train --preset tiny --device cpu --data " + kData + " --steps 400 --batch 2 --seq 32 --val-every 0 " +
                             "--save-every 1 --log-every 1000 --out " + out.string();
  for (int attempt = 0; attempt < 4; attempt++) {
    fs::remove_all(out);
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string cmd = std::string(OWLORE_BINARY) + " " + common + " >/dev/null 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(700 + 137 * attempt));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it was killed; lengthen it";
    const fs::path ckpt = out / "checkpoint";
    ASSERT_TRUE(fs::exists(ckpt)) << "no checkpoint after " << 700 + 137 * attempt << " ms";
    // Every file of the checkpoint the link points at loads.
    const LoadedModel model = load_model(ckpt.string());
    const StateBundle state = load_state_bundle((ckpt / "trainer_state.safetensors").string());
    const int step = state.meta.at("step").get<int>();
    EXPECT_GE(step, 1);
    EXPECT_EQ(state.tensors.at("weights").size(), model.weights.size());
    const CliRun resumed = run(common + " --resume " + ckpt.string() + " --stop-at " + std::to_string(step + 2));
    EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  }
  fs::remove_all(out);
}

// A fresh directory for one test's files, removed when the test ends.
struct EvalDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("owlore_eval_" + std::to_string(getpid()));
  EvalDir() { std::filesystem::create_directories(path); }
  ~EvalDir() { std::filesystem::remove_all(path); }
};

TEST(Cli, EvalOnAFifoFailsAtOnce) {
  // It used to block forever in open(); timeout(1) ends such a run with exit code 124.
  EvalDir dir;
  const std::string fifo = (dir.path / "data.fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const CliRun r = owlore::test::run_owlore("eval --preset tiny --seq 16 --data " + fifo, 20);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "eval blocked on a FIFO";
  EXPECT_NE(r.output.find(fifo + ": data file is a FIFO (named pipe), expected a regular file"), std::string::npos)
      << r.output;
}

TEST(Cli, EvalWithANonFiniteLossFails) {
  // Finite weights so large that the forward overflows: the loss is NaN, which JSON prints as null.
  EvalDir dir;
  const ModelLayout tiny(preset_config("tiny"));
  const std::vector<float> huge = owlore::test::random_vector(tiny.total, 3, 1e18f);
  save_hf_checkpoint((dir.path / "huge").string(), tiny, huge.data(), SaveDtype::f32);
  const CliRun r =
      run("eval --model " + (dir.path / "huge").string() + " --seq 16 --batch 1 --max-batches 1 --data " + kData);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("\"loss\":null"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not a finite number"), std::string::npos) << r.output;
}

// A one-layer model with SmolLM2's vocabulary size, random weights, no tokenizer files.
void save_model_with_smollm2_vocab(const std::filesystem::path& dir) {
  ModelConfig c;
  c.name = "tok";
  c.n_layers = 1;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.ffn = 12;
  c.vocab = 49152;  // the SmolLM2 tokenizer's
  c.max_seq = 64;
  c.tied_embeddings = true;
  const ModelLayout layout(c);
  save_hf_checkpoint(dir.string(), layout, owlore::test::random_vector(layout.total, 4, 0.1f).data(), SaveDtype::f32);
}

TEST(Cli, EvalWithNoScoredTokenFails) {
  // Instruction data whose first sequence is all system prompt: no answer token to score.
  EvalDir dir;
  const std::filesystem::path model = dir.path / "tok";
  save_model_with_smollm2_vocab(model);
  std::filesystem::copy_file(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json",
                             model / "tokenizer.json");
  const std::string jsonl = (dir.path / "qa.jsonl").string();
  std::ofstream(jsonl) << "{\"question\": \"What is 2 + 2?\", \"answer\": \"Two and two make four, so 2 + 2 = 4.\"}\n";
  const std::string common = "eval --model " + model.string() + " --chat-template chatml --seq 8 --batch 1 --data " + jsonl;
  const CliRun masked = run(common + " --max-batches 1");
  EXPECT_NE(masked.exit_code, 0) << masked.output;
  EXPECT_NE(masked.output.find(jsonl + ": no token was scored: every target in the 1 evaluated sequence is masked"),
            std::string::npos) << masked.output;
  EXPECT_EQ(masked.output.find("\"perplexity\":1.0"), std::string::npos) << masked.output;
  // All of the data reaches the answer: a loss.
  const CliRun scored = run(common);
  EXPECT_EQ(scored.exit_code, 0) << scored.output;
  EXPECT_NE(scored.output.find("\"loss\":"), std::string::npos) << scored.output;
}

TEST(Cli, EvalTakesTheTokenizerOfAnotherModel) {
  // A checkpoint without tokenizer.json (what train writes from a preset) scores instruction data
  // with --tokenizer naming a model that has one; a --tokenizer without one is an error.
  EvalDir dir;
  const std::filesystem::path model = dir.path / "model", tokenizer = dir.path / "tokenizer";
  save_model_with_smollm2_vocab(model);
  std::filesystem::create_directories(tokenizer);
  std::filesystem::copy_file(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json",
                             tokenizer / "tokenizer.json");
  const std::string jsonl = (dir.path / "qa.jsonl").string();
  std::ofstream(jsonl) << "{\"question\": \"What is 2 + 2?\", \"answer\": \"Two and two make four, so 2 + 2 = 4.\"}\n";
  const std::string common =
      "eval --model " + model.string() + " --chat-template chatml --device cpu --seq 8 --batch 1 --data " + jsonl;
  const CliRun without = run(common);
  EXPECT_NE(without.exit_code, 0) << without.output;
  EXPECT_NE(without.output.find("needs the model's tokenizer; model 'model' has no tokenizer and a vocabulary of 49152"),
            std::string::npos) << without.output;
  EXPECT_NE(without.output.find("pass --tokenizer"), std::string::npos) << without.output;
  const CliRun with = run(common + " --tokenizer " + tokenizer.string());
  EXPECT_EQ(with.exit_code, 0) << with.output;
  EXPECT_NE(with.output.find("\"loss\":"), std::string::npos) << with.output;
  const CliRun empty = run(common + " --tokenizer " + model.string());
  EXPECT_NE(empty.exit_code, 0) << empty.output;
  EXPECT_NE(empty.output.find("--tokenizer " + model.string() + ": no tokenizer in it"), std::string::npos)
      << empty.output;
}

TEST(Cli, TrainsOnMessagesAndAlpacaWithTheModelsChatTemplate) {
  // The model's tokenizer_config.json names SmolLM2's ChatML template: --chat-template auto finds
  // it; without one, chat data is an error saying to pass --chat-template; text data with a
  // tokenizer-less model of a real vocabulary is an error, never byte ids.
  EvalDir dir;
  const std::filesystem::path model = dir.path / "tok", bare = dir.path / "bare";
  save_model_with_smollm2_vocab(model);
  save_model_with_smollm2_vocab(bare);
  std::filesystem::copy_file(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json",
                             model / "tokenizer.json");
  std::ifstream golden(std::string(OWLORE_SOURCE_DIR) + "/tests/data/chat_template_golden.json");
  const nlohmann::json templates = nlohmann::json::parse(golden)["templates"];
  std::ofstream(model / "tokenizer_config.json") << nlohmann::json({{"chat_template", templates["chatml"]}}).dump();
  const std::string messages = (dir.path / "chat.txt").string(), alpaca = (dir.path / "alpaca_data.json").string();
  {
    std::ofstream m(messages);
    for (int i = 0; i < 8; i++)
      m << "{\"messages\": [{\"role\": \"user\", \"content\": \"Name bird " << i
        << "\"}, {\"role\": \"assistant\", \"content\": \"An owl.\"}, {\"role\": \"user\", \"content\": \"More?\"}, "
           "{\"role\": \"assistant\", \"content\": \"A heron and a wren.\"}]}\n";
    std::ofstream a(alpaca);
    a << "[\n";
    for (int i = 0; i < 8; i++)
      a << (i ? ",\n" : "") << "  {\"instruction\": \"Add these.\", \"input\": \"" << i << " and 2\", \"output\": \"It is "
        << i + 2 << ".\"}";
    a << "\n]\n";
  }
  for (const std::string& data : {messages, alpaca})
    for (const char* train_on : {"assistant", "last", "all"}) {
      const CliRun train = run("train --model " + model.string() + " --device cpu --data " + data + " --train-on " +
                               train_on + " --system 'Be brief.' --steps 1 --batch 1 --seq 16 --val-every 0 "
                               "--val-batches 1 --no-checkpoint --overwrite --out " + (dir.path / "run").string());
      EXPECT_EQ(train.exit_code, 0) << data << " " << train_on << ": " << train.output;
    }
  const CliRun none = run("train --model " + bare.string() + " --tokenizer " + dir.path.string() + "/missing --device "
                          "cpu --data " + messages + " --steps 1 --batch 1 --seq 16 --out " + (dir.path / "r2").string());
  EXPECT_NE(none.exit_code, 0) << none.output;
  std::filesystem::remove(model / "tokenizer_config.json");
  const CliRun no_template = run("eval --model " + model.string() + " --device cpu --seq 16 --batch 1 --data " + alpaca);
  EXPECT_NE(no_template.exit_code, 0) << no_template.output;
  EXPECT_NE(no_template.output.find("chat data needs a chat template"), std::string::npos) << no_template.output;
  EXPECT_NE(no_template.output.find("pass --chat-template NAME"), std::string::npos) << no_template.output;
  const std::string text = (dir.path / "text.txt").string();
  std::ofstream(text) << std::string(400, 'o');
  const CliRun bytes = run("eval --model " + bare.string() + " --device cpu --seq 16 --batch 1 --data " + text);
  EXPECT_NE(bytes.exit_code, 0) << bytes.output;
  EXPECT_NE(bytes.output.find("text data needs the model's tokenizer"), std::string::npos) << bytes.output;
  EXPECT_NE(bytes.output.find("pass --tokenizer"), std::string::npos) << bytes.output;
}

TEST(Cli, TrainAndConvertCheckpointsCarryTheTokenizer) {
  // The checkpoint train writes holds the input model's tokenizer (an HF directory's
  // tokenizer.json byte for byte), so eval and generate use it with no --tokenizer.
  EvalDir dir;
  ModelConfig c;
  c.name = "tokenized";
  c.n_layers = 1;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.ffn = 12;
  c.vocab = 49152;  // the SmolLM2 tokenizer's
  c.max_seq = 64;
  c.tied_embeddings = true;
  const ModelLayout layout(c);
  const std::filesystem::path model = dir.path / "model", out = dir.path / "run";
  save_hf_checkpoint(model.string(), layout, owlore::test::random_vector(layout.total, 6, 0.1f).data(), SaveDtype::f32);
  const std::string hf_tokenizer = std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json";
  std::filesystem::copy_file(hf_tokenizer, model / "tokenizer.json");
  const std::string jsonl = (dir.path / "qa.jsonl").string();
  {
    std::ifstream gsm8k(std::string(OWLORE_SOURCE_DIR) + "/data/gsm8k/train.jsonl");
    std::ofstream head(jsonl);
    std::string line;
    for (int i = 0; i < 40 && std::getline(gsm8k, line); i++) head << line << "\n";
  }
  const CliRun train = run("train --model " + model.string() + " --chat-template chatml --device cpu --data " + jsonl +
                           " --steps 1 --batch 1 --seq 32 --val-every 0 --val-batches 1 --out " + out.string());
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::filesystem::path checkpoint = out / "checkpoint";
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(read(checkpoint / "tokenizer.json"), read(hf_tokenizer));
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    EXPECT_TRUE(std::filesystem::exists(checkpoint / name)) << name;
  const CliRun eval = run("eval --model " + checkpoint.string() + " --chat-template chatml --device cpu --seq 32 --batch 1 --data " + jsonl);
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("\"loss\":"), std::string::npos) << eval.output;
  const CliRun generate =
      run("generate --model " + checkpoint.string() + " --chat-template chatml --prompt hello --max-tokens 2");
  EXPECT_EQ(generate.exit_code, 0) << generate.output;

  // convert writes the same files.
  const std::filesystem::path converted = dir.path / "converted";
  const CliRun convert = run("convert --model " + checkpoint.string() + " --out " + converted.string());
  ASSERT_EQ(convert.exit_code, 0) << convert.output;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    EXPECT_EQ(read(converted / name), read(checkpoint / name)) << name;
}
