// A checkpoint's tokenizer files (io/tokenizer_export.h): the real SmolLM2 GGUF's vocabulary
// converted to tokenizer.json is Hugging Face's own file for that model and tokenizes Tiny
// Shakespeare and GSM8K to the GGUF tokenizer's ids; an HF directory's files are copied byte for
// byte; a preset writes none and a save removes another model's; end-of-turn ids; sharded
// weights (index + shards) read back. tools/ref/check_hf_tokenizer.py checks the same files
// against transformers' AutoTokenizer outside the suite.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/model_tokenizer.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "io/tokenizer_export.h"
#include "model/layout.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;

const std::string kSource = OWLORE_SOURCE_DIR;
const std::string kHfTokenizer = kSource + "/tests/data/smollm2_tokenizer.json";  // HF's SmolLM2 file

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string smollm2_path() {
  const char* cache = std::getenv("OWLORE_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir = cache ? cache : std::string(home ? home : "") + "/.cache/owlore";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// A one-layer model with SmolLM2's vocabulary: the tokenizer files, not the weights, are tested.
ModelConfig small_config(int vocab = 49152) {
  ModelConfig c;
  c.name = "small";
  c.n_layers = 1;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.ffn = 12;
  c.vocab = vocab;
  c.max_seq = 64;
  c.tied_embeddings = true;
  return c;
}

void expect_same_ids(const Tokenizer& want, const Tokenizer& got, const std::string& text, const std::string& label) {
  const std::vector<int32_t> a = want.encode(text), b = got.encode(text);
  ASSERT_FALSE(a.empty()) << label;
  if (a == b) return;
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) i++;
  ADD_FAILURE() << label << ": " << a.size() << " ids from the GGUF vs " << b.size()
                << " from the written tokenizer.json, first difference at " << i;
}

bool has_file(const std::string& dir, const std::string& name) { return fs::exists(dir + "/" + name); }

TEST(TokenizerExport, GgufVocabularyBecomesHuggingFacesOwnTokenizerJson) {
  const std::string gguf_path = smollm2_path();
  if (!fs::exists(gguf_path)) GTEST_SKIP() << gguf_path << " is absent; run tools/fetch_smollm2.sh to fetch it";
  const GgufFile gguf(gguf_path);
  const ModelConfig config = gguf.config();
  const TokenizerFiles files = checkpoint_tokenizer_files(gguf_path, config);
  test::TempDir dir("tokexport");
  const ModelConfig small = small_config();
  const ModelLayout layout(small);
  const std::vector<float> w = test::random_vector(layout.total, 3, 0.1f);
  save_hf_checkpoint(dir.path, layout, w.data(), SaveDtype::f32, files);
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"})
    EXPECT_TRUE(has_file(dir.path, name)) << name;
  EXPECT_EQ(load_model(dir.path).weights, w);

  // The conversion is exactly the tokenizer.json Hugging Face ships with SmolLM2 (as JSON; the
  // bytes differ in key order and spacing only).
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.path + "/tokenizer.json")),
            nlohmann::json::parse(read_file(kHfTokenizer)));

  const nlohmann::json config_json = nlohmann::json::parse(read_file(dir.path + "/tokenizer_config.json"));
  EXPECT_EQ(config_json["chat_template"], gguf.get_string("tokenizer.chat_template"));
  EXPECT_EQ(config_json["bos_token"], "<|im_start|>");
  EXPECT_EQ(config_json["eos_token"], "<|im_end|>");
  EXPECT_EQ(config_json["pad_token"], "<|im_end|>");
  EXPECT_EQ(config_json["unk_token"], "<|endoftext|>");
  EXPECT_EQ(config_json["model_max_length"], 8192);
  const nlohmann::json special = nlohmann::json::parse(read_file(dir.path + "/special_tokens_map.json"));
  EXPECT_EQ(special["eos_token"], "<|im_end|>");
  const nlohmann::json generation = nlohmann::json::parse(read_file(dir.path + "/generation_config.json"));
  EXPECT_EQ(generation, (nlohmann::json{{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 2}}));

  // owlore's loader finds the tokenizer in the checkpoint, with the GGUF's ids and specials.
  const Tokenizer from_gguf(gguf_bpe_vocab(gguf));
  const std::unique_ptr<Tokenizer> from_checkpoint = load_model_tokenizer(dir.path);
  ASSERT_NE(from_checkpoint, nullptr);
  EXPECT_EQ(from_checkpoint->vocab().tokens, from_gguf.vocab().tokens);
  EXPECT_EQ(from_checkpoint->vocab().merges, from_gguf.vocab().merges);
  EXPECT_EQ(from_checkpoint->vocab().bos, 1);
  EXPECT_EQ(from_checkpoint->vocab().eos, 2);
  EXPECT_EQ(from_checkpoint->vocab().pad, 2);
  for (int id = 0; id < from_gguf.size(); id++)
    ASSERT_EQ(from_checkpoint->is_special(id), from_gguf.is_special(id)) << "token " << id;
  expect_same_ids(from_gguf, *from_checkpoint, read_file(kSource + "/data/tinyshakespeare/input.txt"),
                  "Tiny Shakespeare");
  const std::string gsm8k = read_file(kSource + "/data/gsm8k/train.jsonl");
  expect_same_ids(from_gguf, *from_checkpoint, gsm8k, "GSM8K train (raw JSONL)");
  std::string chats;
  std::istringstream lines(gsm8k);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    chats += format_chat(ChatTemplate::kChatML, {{"user", j["question"].get<std::string>()}, {"assistant", j["answer"].get<std::string>()}},
                         /*add_generation_prompt=*/false);
  }
  expect_same_ids(from_gguf, *from_checkpoint, chats, "GSM8K train in the chat template");
}

TEST(TokenizerExport, HuggingFaceDirectoryFilesAreCopiedByteForByte) {
  test::TempDir dir("tokexport");
  const ModelConfig c = small_config();
  const ModelLayout layout(c);
  const std::vector<float> w = test::random_vector(layout.total, 4, 0.1f);
  const std::string source = dir.path + "/source", out = dir.path + "/out";
  save_hf_checkpoint(source, layout, w.data(), SaveDtype::f32);
  fs::copy_file(kHfTokenizer, source + "/tokenizer.json");
  // Without tokenizer_config.json etc. the derived files are written from tokenizer.json (no
  // bos/eos/pad there: none named) and config.json.
  const TokenizerFiles derived = checkpoint_tokenizer_files(source + "/model.safetensors", c);  // a file inside works
  save_hf_checkpoint(out, layout, w.data(), SaveDtype::bf16, derived);
  EXPECT_EQ(read_file(out + "/tokenizer.json"), read_file(kHfTokenizer));
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    EXPECT_TRUE(has_file(out, name)) << name;
  EXPECT_EQ(nlohmann::json::parse(read_file(out + "/tokenizer_config.json"))["model_max_length"], 64);

  // With the directory's own files, all of them travel as they are.
  const std::string config_text =
      R"({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": "{{ messages }}"})";
  const std::string generation_text = R"({"bos_token_id": 1, "eos_token_id": [2, 0]})";
  std::ofstream(source + "/tokenizer_config.json", std::ios::binary) << config_text;
  std::ofstream(source + "/generation_config.json", std::ios::binary) << generation_text;
  save_hf_checkpoint(out, layout, w.data(), SaveDtype::bf16, checkpoint_tokenizer_files(source, c));
  EXPECT_EQ(read_file(out + "/tokenizer.json"), read_file(kHfTokenizer));
  EXPECT_EQ(read_file(out + "/tokenizer_config.json"), config_text);
  EXPECT_EQ(read_file(out + "/generation_config.json"), generation_text);
  EXPECT_EQ(nlohmann::json::parse(read_file(out + "/special_tokens_map.json")),
            (nlohmann::json{{"bos_token", "<|im_start|>"}, {"eos_token", "<|im_end|>"}}));
  const std::unique_ptr<Tokenizer> tok = load_model_tokenizer(out);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab().eos, 2);

  // A preset has no tokenizer: nothing is written, and a save over this directory removes the
  // other model's files rather than pairing them with these weights.
  EXPECT_TRUE(checkpoint_tokenizer_files("", c).empty());
  save_hf_checkpoint(out, layout, w.data(), SaveDtype::bf16, checkpoint_tokenizer_files("", c));
  for (const char* name : kTokenizerFileNames) EXPECT_FALSE(has_file(out, name)) << name;
  EXPECT_EQ(load_model_tokenizer(out), nullptr);
  EXPECT_TRUE(has_file(out, "model.safetensors"));
}

TEST(TokenizerExport, EveryEndOfTurnIdGoesToGenerationConfig) {
  BpeVocab v;
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "</s>", "a"};
  v.bos = 1;
  v.eos = 0;
  // The template ends turns with <|im_end|>; </s> is not in it, so it does not end a turn.
  const std::vector<int> ids = end_of_turn_ids(v, "{{ '<|im_start|>' + m + '<|im_end|>' }}", {4, 2});
  EXPECT_EQ(ids, (std::vector<int>{0, 2, 4}));
  TokenizerMetadata meta;
  meta.end_of_turn = ids;
  EXPECT_EQ(nlohmann::json::parse(hf_generation_config_json(v, meta)),
            (nlohmann::json{{"bos_token_id", 1}, {"eos_token_id", {0, 2, 4}}, {"pad_token_id", nullptr}}));
  meta.end_of_turn = {0};
  EXPECT_EQ(nlohmann::json::parse(hf_generation_config_json(v, meta))["eos_token_id"], 0);
}

TEST(TokenizerExport, RefusesWhatAHuggingFaceVocabularyCannotHold) {
  BpeVocab v;
  v.tokens = {"a", "b", "a"};
  v.pre = "gpt2";
  test::expect_error([&] { hf_tokenizer_json(v); }, {"token \"a\" has ids 0 and 2"});
  v.tokens = {"a", "b"};
  v.pre = "llama3";
  test::expect_error([&] { hf_tokenizer_json(v); }, {"pre-tokenizer \"llama3\""});
}

TEST(CheckpointShards, AboveTheLimitWithAnIndexAndReadBack) {
  const ModelConfig c = preset_config("tiny");
  const ModelLayout layout(c);
  const std::vector<float> w = test::random_vector(layout.total, 7);
  test::TempDir dir("shards");
  // A limit of a few tensors' bytes: several shards, none above it unless one tensor is.
  int64_t largest = 0;
  for (const TensorSlot& s : layout.tensors) largest = std::max(largest, s.numel() * 4);
  save_hf_checkpoint(dir.path, layout, w.data(), SaveDtype::f32, {}, 2 * largest);
  EXPECT_FALSE(has_file(dir.path, "model.safetensors"));
  const nlohmann::json index = nlohmann::json::parse(read_file(dir.path + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& item : index["weight_map"].items()) shards.insert(item.value().get<std::string>());
  ASSERT_GT(shards.size(), 2u);
  char last[64];
  std::snprintf(last, sizeof(last), "model-%05zu-of-%05zu.safetensors", shards.size(), shards.size());
  EXPECT_TRUE(shards.count(last)) << last;
  EXPECT_EQ(index["weight_map"].size(), layout.tensors.size());
  EXPECT_EQ(index["metadata"]["total_size"], layout.total * 4);
  for (const std::string& shard : shards) EXPECT_LE((int64_t)fs::file_size(dir.path + "/" + shard), 2 * largest + 4096);
  const LoadedModel m = load_model(dir.path);
  EXPECT_EQ(m.weights, w);
  EXPECT_EQ(m.source, dir.path + "/model.safetensors.index.json");

  // Saved again unsharded, the shards and the index go: nothing stale remains beside the file.
  save_hf_checkpoint(dir.path, layout, w.data(), SaveDtype::f32);
  EXPECT_FALSE(has_file(dir.path, "model.safetensors.index.json"));
  for (const std::string& shard : shards) EXPECT_FALSE(has_file(dir.path, shard)) << shard;
  EXPECT_EQ(load_model(dir.path).weights, w);
}

}  // namespace
}  // namespace owlore
