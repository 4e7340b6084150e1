// LLaMA-3's byte-level BPE in owlore's one Tokenizer, from all three forms it comes in: Meta's
// tiktoken tokenizer.model, the tokenizer.json owlore exports from it (Meta-Llama-3's HF form),
// and GGUF metadata (pre "llama-bpe"). Each must give the ids of tiktoken and HF tokenizers
// (tests/data/llama3_tokenizer_golden.json, tools/ref/make_llama3_tokenizer_golden.py), on the
// golden texts in full and on all of Tiny Shakespeare and GSM8K train by count and sha256.
// Needs the real file (tools/fetch_tokenizers.sh); skips, saying so, without it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "io/gguf.h"
#include "io/model_tokenizer.h"
#include "io/tiktoken.h"
#include "io/tokenizer.h"
#include "io/tokenizer_export.h"
#include "gguf_writer.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;

const std::string kSource = OWLORE_SOURCE_DIR;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string llama3_model_path() {
  const char* cache = std::getenv("OWLORE_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir = cache ? cache : std::string(home ? home : "") + "/.cache/owlore";
  return dir + "/tokenizers/llama3/tokenizer.model";
}

// SHA-256 (FIPS 180-4), to compare long id streams with the golden's hashes.
std::string sha256_hex(const std::string& data) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = data;
  msg += (char)0x80;
  while (msg.size() % 64 != 56) msg += (char)0;
  const uint64_t bits = (uint64_t)data.size() * 8;
  for (int i = 7; i >= 0; i--) msg += (char)((bits >> (8 * i)) & 0xFF);
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t block = 0; block < msg.size(); block += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
      const unsigned char* p = (const unsigned char*)msg.data() + block + 4 * i;
      w[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    }
    for (int i = 16; i < 64; i++) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  char out[65];
  for (int i = 0; i < 8; i++) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
  return std::string(out, 64);
}

std::string ids_sha256(const std::vector<int32_t>& ids) {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids)
    for (int i = 0; i < 4; i++) bytes += (char)(((uint32_t)id >> (8 * i)) & 0xFF);
  return sha256_hex(bytes);
}

TEST(Llama3Tokenizer, Sha256MatchesKnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}

TEST(Llama3Tokenizer, TiktokenFilesAreToldFromSentencePieceByContent) {
  EXPECT_TRUE(looks_like_tiktoken("IQ== 0\nIg== 1\n"));
  EXPECT_TRUE(looks_like_tiktoken("IQ== 0"));
  EXPECT_FALSE(looks_like_tiktoken(std::string("\x0a\x0b\x0a\x05<unk>\x15\x00\x00", 12)));  // protobuf
  EXPECT_FALSE(looks_like_tiktoken("IQ== zero\n"));
  EXPECT_FALSE(looks_like_tiktoken("I!== 0\n"));
  test::expect_error([] { parse_tiktoken_model("IQ== 0\nIg== 5\n", "t.model"); }, {"t.model:2", "rank 5, expected 1"});
  test::expect_error([] { parse_tiktoken_model("IQ== 0\nnot base64\n", "t.model"); }, {"t.model:2", "base64"});
  test::expect_error([] { parse_tiktoken_model("IQ== 0\n", "t.model"); }, {"t.model", "no token for byte 0x0"});
}

struct Golden {
  nlohmann::json j;
  std::vector<std::string> gsm8k_train;  // question + "\n" + answer, every problem
  std::string shakespeare;               // all of it
};

const Golden& golden() {
  static const Golden g = [] {
    Golden g;
    g.j = nlohmann::json::parse(read_file(kSource + "/tests/data/llama3_tokenizer_golden.json"));
    g.shakespeare = read_file(kSource + "/data/tinyshakespeare/input.txt");
    std::istringstream lines(read_file(kSource + "/data/gsm8k/train.jsonl"));
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      const auto ex = nlohmann::json::parse(line);
      g.gsm8k_train.push_back(ex["question"].get<std::string>() + "\n" + ex["answer"].get<std::string>());
    }
    return g;
  }();
  return g;
}

void expect_ids(const Tokenizer& tok, const std::string& text, const nlohmann::json& want, const std::string& label) {
  const std::vector<int32_t> got = tok.encode(text);
  const std::vector<int32_t> expected = want.get<std::vector<int32_t>>();
  if (got != expected) {
    size_t i = 0;
    while (i < got.size() && i < expected.size() && got[i] == expected[i]) i++;
    ADD_FAILURE() << label << ": " << got.size() << " ids, tiktoken/HF give " << expected.size()
                  << ", first difference at " << i << " (" << (i < got.size() ? got[i] : -1) << " vs "
                  << (i < expected.size() ? expected[i] : -1) << ")";
  }
  EXPECT_EQ(tok.decode(got), text) << label << ": decode(encode(x)) != x";
}

// Every golden: full ids on the short texts, count + sha256 on all of Tiny Shakespeare and
// GSM8K train. Returns owlore's encode speed on Tiny Shakespeare (MB/s, cold piece cache).
double expect_golden_ids(const Tokenizer& tok, const std::string& form) {
  const Golden& g = golden();
  EXPECT_EQ(tok.size(), g.j["vocab_size"].get<int>()) << form;
  for (const auto& [name, id] : g.j["specials"].items()) {
    EXPECT_EQ(tok.token_id(name), id.get<int>()) << form << ": " << name;
    EXPECT_TRUE(tok.is_special(id.get<int>())) << form << ": " << name;
    EXPECT_EQ(tok.encode(name), std::vector<int32_t>{id.get<int32_t>()}) << form << ": " << name << " parsed";
  }
  EXPECT_EQ(tok.token_id("<|reserved_special_token_245|>"), 128255) << form;
  expect_ids(tok, g.j["shakespeare"]["text"], g.j["shakespeare"]["ids"], form + " shakespeare");
  for (size_t i = 0; i < g.j["gsm8k_chat"].size(); i++)
    expect_ids(tok, g.j["gsm8k_chat"][i]["text"], g.j["gsm8k_chat"][i]["ids"], form + " gsm8k_chat[" + std::to_string(i) + "]");
  for (size_t i = 0; i < g.j["torture"].size(); i++)
    expect_ids(tok, g.j["torture"][i]["text"], g.j["torture"][i]["ids"], form + " torture[" + std::to_string(i) + "]");

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> all = tok.encode(g.shakespeare);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ((int64_t)all.size(), g.j["shakespeare_all"]["count"].get<int64_t>()) << form << " all of Tiny Shakespeare";
  EXPECT_EQ(ids_sha256(all), g.j["shakespeare_all"]["sha256"].get<std::string>()) << form << " all of Tiny Shakespeare";
  EXPECT_EQ(tok.decode(all), g.shakespeare) << form;

  std::vector<int32_t> gsm;
  for (const std::string& text : g.gsm8k_train) tok.encode_append(text, gsm);
  EXPECT_EQ(g.gsm8k_train.size(), g.j["gsm8k_train_all"]["problems"].get<size_t>());
  EXPECT_EQ((int64_t)gsm.size(), g.j["gsm8k_train_all"]["count"].get<int64_t>()) << form << " all of GSM8K train";
  EXPECT_EQ(ids_sha256(gsm), g.j["gsm8k_train_all"]["sha256"].get<std::string>()) << form << " all of GSM8K train";
  EXPECT_EQ(tok.dropped_bytes(), 0) << form;
  return g.shakespeare.size() / seconds / 1e6;
}

#define REQUIRE_LLAMA3_MODEL()                                                                           \
  const std::string model_path = llama3_model_path();                                                   \
  if (!fs::exists(model_path))                                                                           \
  GTEST_SKIP() << "LLaMA-3 tokenizer.model not found at " << model_path                                  \
               << " (run tools/fetch_tokenizers.sh, or set OWLORE_CACHE): LLaMA-3 tokenizer NOT tested"

TEST(Llama3Tokenizer, TiktokenModelMatchesTiktokenAndHf) {
  REQUIRE_LLAMA3_MODEL();
  const BpeVocab v = load_tiktoken_model(model_path);
  EXPECT_EQ(v.pre, "llama-bpe");
  EXPECT_TRUE(v.ignore_merges);
  EXPECT_EQ(v.tokens[v.bos], "<|begin_of_text|>");
  EXPECT_EQ(v.tokens[v.eos], "<|end_of_text|>");
  EXPECT_EQ(v.tokens[v.pad], "<|finetune_right_pad_id|>");
  EXPECT_EQ(v.tokens[220], "Ġ");  // rank 220 is the space byte
  // A model directory with only the tiktoken file loads it (no tokenizer.json).
  const std::unique_ptr<Tokenizer> tok = load_model_tokenizer(fs::path(model_path).parent_path().string());
  ASSERT_TRUE(tok);
  const double mb_s = expect_golden_ids(*tok, "tokenizer.model");
  std::printf("owlore encodes Tiny Shakespeare at %.1f MB/s (one thread, cold cache); tiktoken: %.1f MB/s\n", mb_s,
              golden().j["tiktoken_shakespeare_mb_per_s"].get<double>());
}

TEST(Llama3Tokenizer, ExportedTokenizerJsonGivesTheSameIds) {
  REQUIRE_LLAMA3_MODEL();
  // The checkpoint export of a directory holding the tiktoken file derives tokenizer.json.
  test::TempDir dir("llama3tok");
  fs::copy_file(model_path, dir.path + "/tokenizer.model");
  ModelConfig config;
  config.max_seq = 8192;
  const TokenizerFiles files = checkpoint_tokenizer_files(dir.path, config);
  const std::string* json = files.find("tokenizer.json");
  ASSERT_TRUE(json);
  ASSERT_TRUE(files.find("tokenizer.model"));  // travels as it is too
  if (const char* out = std::getenv("OWLORE_LLAMA3_EXPORT")) std::ofstream(out, std::ios::binary) << *json;

  const nlohmann::json j = nlohmann::json::parse(*json);
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], kLlama3SplitPattern);
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
  EXPECT_EQ(j["model"]["ignore_merges"], true);
  EXPECT_EQ(j["added_tokens"].size(), 256u);

  const nlohmann::json gen = nlohmann::json::parse(*files.find("generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 128000);
  EXPECT_EQ(gen["pad_token_id"], 128004);
  EXPECT_EQ(gen["eos_token_id"], nlohmann::json::array({128001, 128008, 128009}));  // eos, eom, eot

  BpeVocab v = parse_tokenizer_json(*json, "exported tokenizer.json");
  EXPECT_EQ(v.pre, "llama-bpe");
  EXPECT_TRUE(v.ignore_merges);
  expect_golden_ids(Tokenizer(std::move(v)), "tokenizer.json");

  // Written to disk, load_model_tokenizer prefers it over the tokenizer.model.
  std::ofstream(dir.path + "/tokenizer.json", std::ios::binary) << *json;
  const std::unique_ptr<Tokenizer> tok = load_model_tokenizer(dir.path);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab().pre, "llama-bpe");
}

TEST(Llama3Tokenizer, GgufMetadataGivesTheSameIds) {
  REQUIRE_LLAMA3_MODEL();
  const BpeVocab v = load_tiktoken_model(model_path);
  // What llama.cpp's converter writes for LLaMA-3: byte-level tokens, merges, types, pre.
  test::GgufWriter w;
  w.string("general.architecture", "llama");
  w.string("tokenizer.ggml.model", "gpt2");
  w.string("tokenizer.ggml.pre", "llama-bpe");
  w.strings("tokenizer.ggml.tokens", v.tokens);
  w.strings("tokenizer.ggml.merges", v.merges);
  w.i32s("tokenizer.ggml.token_type", std::vector<int32_t>(v.token_types.begin(), v.token_types.end()));
  w.u32("tokenizer.ggml.bos_token_id", 128000);
  w.u32("tokenizer.ggml.eos_token_id", 128009);
  const std::string bytes = w.build();
  const GgufFile gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "llama3.gguf");
  const BpeVocab from_gguf = gguf_bpe_vocab(gguf);
  EXPECT_TRUE(from_gguf.ignore_merges);
  EXPECT_EQ(from_gguf.bos, 128000);
  EXPECT_EQ(from_gguf.eos, 128009);
  expect_golden_ids(Tokenizer(from_gguf), "GGUF");
}

TEST(Llama3Tokenizer, TokenizerJsonWithAnotherSplitRegexIsRefused) {
  const std::string json = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}})";
  test::expect_error([&] { parse_tokenizer_json(json, "t.json"); }, {"t.json", "unsupported pre_tokenizer"});
  std::string wrong_behavior = json;
  const std::string llama = nlohmann::json(kLlama3SplitPattern).dump();
  const std::string other = R"("\\s+")";
  wrong_behavior.replace(wrong_behavior.find(other), other.size(), llama);
  wrong_behavior.replace(wrong_behavior.find("Isolated"), 8, "Removed");
  test::expect_error([&] { parse_tokenizer_json(wrong_behavior, "t.json"); }, {"t.json", "behavior Isolated"});
}

}  // namespace
}  // namespace owlore
