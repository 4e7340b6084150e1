// Inputs that used to hang or exhaust the machine instead of failing: a FIFO (or a directory,
// device or socket) where a reader expects a file, and configs whose shapes no file could back.
// Each case runs in a child process under a time limit and an address-space limit, so that a
// regression fails the test (as "timed out" or std::bad_alloc) instead of stalling the suite or
// waking the OOM killer.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/model_info.h"
#include "io/model_tokenizer.h"
#include "io/safetensors.h"
#include "io/token_data.h"
#include "io/tokenizer.h"
#include "model/layout.h"
#include "child_test_util.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;
using test::outcome_in_child;

// Expects f(), run in a child process, to throw an owlore::Error naming every one of parts.
void refused(const std::function<void()>& f, std::initializer_list<std::string> parts, const std::string& what) {
  test::expect_refused_in_child(f, parts, what);
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

void make_fifo(const std::string& path) { ASSERT_EQ(mkfifo(path.c_str(), 0600), 0) << path; }

// A Hugging Face checkpoint of the tiny preset in dir.
void save_tiny(const std::string& dir, const char* preset = "tiny") {
  const ModelLayout layout(preset_config(preset));
  save_hf_checkpoint(dir, layout, test::random_vector(layout.total, 11).data(), SaveDtype::f32);
}

// ---- a FIFO, directory, device or socket where a file is expected ------------------------------

TEST(InputFiles, FifoInPlaceOfAnyModelFileIsRefused) {
  test::TempDir dir("inputs");
  const std::string d = dir.path;
  make_fifo(d + "/fifo.gguf");
  make_fifo(d + "/fifo.safetensors");
  make_fifo(d + "/fifo.bin");
  make_fifo(d + "/fifo.json");
  write_hf_config(d + "/config.json", preset_config("tiny"), "float32");  // beside fifo.safetensors
  refused([&] { load_model(d + "/fifo.gguf"); }, {d + "/fifo.gguf", "FIFO", "expected a regular file"}, "gguf");
  refused([&] { load_model(d + "/fifo.safetensors"); }, {d + "/fifo.safetensors", "FIFO"}, "safetensors");
  refused([&] { load_model(d + "/fifo.bin"); }, {d + "/fifo.bin", "model file is a FIFO"}, "sniffed");
  refused([&] { GgufFile file(d + "/fifo.gguf"); }, {"GGUF file is a FIFO"}, "GgufFile");
  refused([&] { SafetensorsFile file(d + "/fifo.safetensors"); }, {"safetensors file is a FIFO"}, "st");
  refused([&] { load_state_bundle(d + "/fifo.safetensors"); }, {d + "/fifo.safetensors", "FIFO"}, "state");
  refused([&] { read_hf_config(d + "/fifo.json"); }, {d + "/fifo.json", "config.json is a FIFO"}, "config");
  refused([&] { load_tokenizer_json(d + "/fifo.json"); }, {d + "/fifo.json", "tokenizer file is a FIFO"}, "tok");
  std::ostringstream info;
  refused([&] { print_model_info(d + "/fifo.bin", info); }, {d + "/fifo.bin", "FIFO"}, "info");

  // The same inside a checkpoint directory, one file at a time.
  const struct {
    const char* file;
    const char* what;
  } members[] = {{"model.safetensors", "safetensors file is a FIFO"}, {"config.json", "config.json is a FIFO"}};
  for (const auto& m : members) {
    const std::string ck = d + "/ck_" + m.file;
    save_tiny(ck);
    fs::remove(ck + "/" + m.file);
    make_fifo(ck + "/" + m.file);
    refused([&] { load_model(ck); }, {ck + "/" + m.file, m.what}, m.file);
  }
  // Sharded: the index, then a shard.
  const std::string sharded = d + "/sharded";
  save_tiny(sharded);
  fs::rename(sharded + "/model.safetensors", sharded + "/model-00001-of-00001.safetensors");
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  for (const TensorSlot& s : ModelLayout(preset_config("tiny")).tensors)
    index["weight_map"][s.name] = "model-00001-of-00001.safetensors";
  make_fifo(sharded + "/model.safetensors.index.json");
  refused([&] { load_model(sharded); }, {"model.safetensors.index.json", "safetensors index is a FIFO"}, "index");
  fs::remove(sharded + "/model.safetensors.index.json");
  write_file(sharded + "/model.safetensors.index.json", index.dump());
  EXPECT_EQ(outcome_in_child([&] { load_model(sharded); }), "ok");
  fs::remove(sharded + "/model-00001-of-00001.safetensors");
  make_fifo(sharded + "/model-00001-of-00001.safetensors");
  refused([&] { load_model(sharded); }, {"model-00001-of-00001.safetensors", "FIFO"}, "shard");

  // tokenizer.json and tokenizer_config.json beside a model.
  const std::string with_tok = d + "/with_tok";
  save_tiny(with_tok);
  make_fifo(with_tok + "/tokenizer.json");
  refused([&] { load_model_tokenizer(with_tok); }, {with_tok + "/tokenizer.json", "FIFO"}, "model tokenizer");
  refused([&] { print_model_info(with_tok, info); }, {with_tok + "/tokenizer.json", "FIFO"}, "info tokenizer");
  const std::string snapshot = d + "/snapshot";
  fs::create_directories(snapshot);
  fs::copy_file(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json", snapshot + "/tokenizer.json");
  make_fifo(snapshot + "/tokenizer_config.json");
  refused([&] { load_tokenizer_json(snapshot + "/tokenizer.json"); },
                 {snapshot + "/tokenizer_config.json", "tokenizer_config.json is a FIFO"}, "tokenizer_config");
}

TEST(InputFiles, FifoInPlaceOfDataIsRefused) {
  test::TempDir dir("inputs");
  const std::string d = dir.path;
  for (const char* name : {"data.txt", "data.jsonl", "data.tok"}) make_fifo(d + "/" + name);
  const Tokenizer tok(load_tokenizer_json(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json"));
  refused([&] { load_token_stream(d + "/data.txt", nullptr); }, {d + "/data.txt", "data file is a FIFO"}, "text");
  refused([&] { load_token_stream(d + "/data.txt", &tok); }, {d + "/data.txt", "FIFO"}, "tokenized text");
  refused([&] { load_token_stream(d + "/data.jsonl", &tok); }, {d + "/data.jsonl", "FIFO"}, "jsonl");
  refused([&] { load_instruct_jsonl(d + "/data.jsonl", tok); }, {"instruction data file is a FIFO"}, "jsonl");
  refused([&] { read_token_file(d + "/data.tok"); }, {d + "/data.tok", "token file is a FIFO"}, "token file");
  refused([&] { read_text_file(d + "/data.txt"); }, {"data file is a FIFO"}, "read_text_file");
  EXPECT_EQ(outcome_in_child([&] {
              if (is_token_file(d + "/data.tok")) fail("a FIFO is no token file");
            }),
            "ok");
}

TEST(InputFiles, DirectoriesDevicesAndSocketsWhereAFileIsExpected) {
  test::TempDir dir("inputs");
  const std::string d = dir.path;
  fs::create_directories(d + "/adir");
  refused([&] { load_token_stream(d + "/adir", nullptr); }, {d + "/adir", "data file is a directory"}, "dir");
  refused([&] { read_hf_config(d + "/adir"); }, {"config.json is a directory"}, "config dir");
  refused([&] { load_token_stream("/dev/zero", nullptr); }, {"/dev/zero", "is a character device"}, "device");
  refused([&] { load_model("/dev/null"); }, {"/dev/null", "model file is a character device"}, "device model");
  // A checkpoint whose model.safetensors is a directory.
  const std::string ck = d + "/ck";
  save_tiny(ck);
  fs::remove(ck + "/model.safetensors");
  fs::create_directories(ck + "/model.safetensors");
  refused([&] { load_model(ck); }, {ck + "/model.safetensors", "safetensors file is a directory"}, "ck dir");
  // A Unix socket.
  const std::string socket_path = d + "/sock";
  const int s = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path.c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&address), sizeof address), 0) << socket_path;
  refused([&] { load_token_stream(socket_path, nullptr); }, {socket_path, "is a socket"}, "socket");
  close(s);
  // A checkpoint directory stays a valid model path; a missing file still says so.
  save_tiny(d + "/good");
  EXPECT_EQ(outcome_in_child([&] { load_model(d + "/good"); }), "ok");
  refused([&] { read_regular_file(d + "/missing.txt", "data file"); },
                 {d + "/missing.txt", "cannot open data file", "No such file"}, "missing");
}

// ---- configs whose shapes no file backs ---------------------------------------------------------

// The tiny checkpoint with config.json keys replaced.
std::string tiny_with(const std::string& dir, const nlohmann::json& changes) {
  save_tiny(dir);
  std::ifstream in(dir + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config.merge_patch(changes);
  write_file(dir + "/config.json", config.dump());
  return dir;
}

TEST(InputFiles, HugeConfigShapesFailBeforeAllocating) {
  test::TempDir dir("inputs");
  const std::string layers = tiny_with(dir.path + "/layers", {{"num_hidden_layers", 2147483647}});
  refused([&] { load_model(layers); },
                 {layers + "/config.json", "num_hidden_layers is 2147483647", "holds tensors of 3 layers"}, "layers");
  // Dimensions the file's tensors do not have fail on the first tensor's shape, before the
  // arena (2^31 x 45 floats for the vocabulary) is allocated.
  const std::string vocab = tiny_with(dir.path + "/vocab", {{"vocab_size", 2147483647}});
  refused([&] { load_model(vocab); }, {"model.embed_tokens.weight", "expected [2147483647, 45]"}, "vocab");
  const std::string ffn = tiny_with(dir.path + "/ffn", {{"intermediate_size", 2147483647}});
  refused([&] { load_model(ffn); }, {"gate_proj.weight", "expected [2147483647, 45]"}, "ffn");
  const std::string hidden =
      tiny_with(dir.path + "/hidden", {{"hidden_size", 2147483646}, {"head_dim", 10}, {"num_attention_heads", 9}});
  refused([&] { load_model(hidden); }, {"model.embed_tokens.weight", "expected [261, 2147483646]"}, "hidden");
  // Products that overflow 64 bits are refused when the config is read.
  const std::string all = tiny_with(dir.path + "/all", {{"num_hidden_layers", 2147483647},
                                                        {"hidden_size", 2147483646},
                                                        {"intermediate_size", 2147483647},
                                                        {"vocab_size", 2147483647}});
  refused([&] { load_model(all); }, {all + "/config.json", "n_layers 2147483647", "64 bits"}, "overflow");
  const std::string heads =
      tiny_with(dir.path + "/heads", {{"num_attention_heads", 65536}, {"num_key_value_heads", 65536},
                                      {"head_dim", 65536}});
  refused([&] { load_model(heads); }, {"n_heads 65536 x head_dim 65536", "overflows 32 bits"}, "heads");
}

}  // namespace
}  // namespace owlore
