// Byte-level BPE: a hand-made vocabulary pins the merge order, the byte symbols and specials;
// the SmolLM2 vocabulary (tests/data/smollm2_tokenizer.json) must reproduce Hugging Face
// tokenizers' ids exactly (tests/data/tokenizer_golden.json, from tools/ref/make_tokenizer_golden.py).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "base/rng.h"
#include "io/dataset.h"
#include "io/gguf.h"
#include "io/model_tokenizer.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"

namespace owlore {
namespace {

const std::string kDataDir = std::string(OWLORE_SOURCE_DIR) + "/tests/data/";

// GPT-2's byte -> symbol table, written out independently of the tokenizer's own.
std::string byte_symbol(int b) {
  const bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!direct) {
    cp = 256;
    for (int x = 0; x < b; x++)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) cp++;
  }
  std::string s;
  if (cp < 0x80) {
    s += (char)cp;
  } else {
    s += (char)(0xC0 | (cp >> 6));
    s += (char)(0x80 | (cp & 0x3F));
  }
  return s;
}

// 256 byte symbols (id = byte), then merged tokens, then specials.
BpeVocab tiny_vocab(const std::vector<std::string>& merges, const std::string& pre = "gpt2") {
  BpeVocab v;
  for (int b = 0; b < 256; b++) v.tokens.push_back(byte_symbol(b));
  v.token_types.assign(256, kTokenNormal);
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    const std::string merged = m.substr(0, space) + m.substr(space + 1);
    if (std::find(v.tokens.begin(), v.tokens.end(), merged) == v.tokens.end()) {
      v.tokens.push_back(merged);
      v.token_types.push_back(kTokenNormal);
    }
  }
  v.merges = merges;
  for (const char* special : {"<|im_start|>", "<|im_end|>", "<|im_end|>!"}) {
    v.tokens.push_back(special);
    v.token_types.push_back(kTokenControl);
  }
  v.pre = pre;
  return v;
}

std::vector<std::string> pieces(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(tok.vocab().tokens[id]);
  return out;
}

using Strings = std::vector<std::string>;

TEST(TokenizerTiny, MergesApplyLowestRankFirst) {
  const Tokenizer bc_first(tiny_vocab({"b c", "a b"}));
  EXPECT_EQ(pieces(bc_first, bc_first.encode("abc")), (Strings{"a", "bc"}));
  const Tokenizer ab_first(tiny_vocab({"a b", "b c"}));
  EXPECT_EQ(pieces(ab_first, ab_first.encode("abc")), (Strings{"ab", "c"}));
  // Merged tokens merge further by their own rank.
  const Tokenizer chain(tiny_vocab({"a b", "ab c", "c d", "abc d"}));
  EXPECT_EQ(pieces(chain, chain.encode("abcd")), (Strings{"abcd"}));
  EXPECT_EQ(pieces(chain, chain.encode("abcdcd")), (Strings{"abcd", "cd"}));
}

TEST(TokenizerTiny, EqualPairsMergeLeftmostFirst) {
  const Tokenizer tok(tiny_vocab({"a a"}));
  EXPECT_EQ(pieces(tok, tok.encode("aaa")), (Strings{"aa", "a"}));
  EXPECT_EQ(pieces(tok, tok.encode("aaaaa")), (Strings{"aa", "aa", "a"}));
}

TEST(TokenizerTiny, SpaceIsPartOfTheFollowingWord) {
  const Tokenizer tok(tiny_vocab({"Ġ a", "Ġa b"}));
  EXPECT_EQ(pieces(tok, tok.encode("ab ab")), (Strings{"a", "b", "Ġab"}));
  // "  ab": the regex leaves one space for the word, the other stands alone.
  EXPECT_EQ(pieces(tok, tok.encode("  ab")), (Strings{"Ġ", "Ġab"}));
}

TEST(TokenizerTiny, EveryByteFallsBackToItsSymbol) {
  const Tokenizer tok(tiny_vocab({"a b"}));
  std::string all;
  for (int b = 0; b < 256; b++) {
    const std::string one(1, (char)b);
    all += one;
    const std::vector<int32_t> ids = tok.encode(one);
    ASSERT_EQ(ids.size(), 1u) << "byte " << b;
    EXPECT_EQ(ids[0], b) << "byte " << b;
    EXPECT_EQ(tok.decode(ids), one) << "byte " << b;
    EXPECT_EQ(tok.token_bytes(b), one);
  }
  // Arbitrary bytes, most of them not UTF-8, survive the round trip.
  EXPECT_EQ(tok.decode(tok.encode(all)), all);
  Rng rng(7);
  for (int trial = 0; trial < 50; trial++) {
    std::string bytes(1 + rng.below(200), '\0');
    for (char& c : bytes) c = (char)rng.below(256);
    EXPECT_EQ(tok.decode(tok.encode(bytes)), bytes);
  }
}

TEST(TokenizerTiny, BytesMissingFromTheVocabularyAreDroppedAndCounted) {
  BpeVocab v = tiny_vocab({"! ?"});
  v.tokens[0x04] = "unused-4";
  v.tokens[0xFF] = "unused-255";
  const Tokenizer tok(v);
  // HF drops the byte and then merges its neighbours within the piece.
  EXPECT_EQ(pieces(tok, tok.encode("!\x04?")), (Strings{"!?"}));
  EXPECT_EQ(tok.dropped_bytes(), 1);
  EXPECT_EQ(pieces(tok, tok.encode("!\x04?\xff")), (Strings{"!?"}));  // a cached piece still counts
  EXPECT_EQ(tok.dropped_bytes(), 3);
}

TEST(TokenizerTiny, SpecialsAreMatchedFirstLongestAndNeverSplit) {
  const Tokenizer tok(tiny_vocab({"a b"}));
  const int start = tok.require_token("<|im_start|>"), end = tok.require_token("<|im_end|>"),
            end_bang = tok.require_token("<|im_end|>!");
  EXPECT_TRUE(tok.is_special(start));
  EXPECT_FALSE(tok.is_special('a'));
  EXPECT_EQ(tok.encode("<|im_start|>ab<|im_end|>"), (std::vector<int32_t>{start, tok.require_token("ab"), end}));
  EXPECT_EQ(tok.encode("x<|im_end|>!y"), (std::vector<int32_t>{'x', end_bang, 'y'}));
  EXPECT_EQ(tok.encode("<|im_end|><|im_end|>"), (std::vector<int32_t>{end, end}));
  EXPECT_EQ(tok.decode({start, end}), "<|im_start|><|im_end|>");
  // As plain text the same characters are ordinary bytes.
  const std::vector<int32_t> plain = tok.encode("<|im_end|>", /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), end), 0);
  EXPECT_EQ(tok.decode(plain), "<|im_end|>");
  // A broken special is ordinary text.
  const std::vector<int32_t> broken = tok.encode("<|im_end|");
  EXPECT_EQ(std::count(broken.begin(), broken.end(), end), 0);
}

TEST(TokenizerTiny, DigitsAreIsolatedOnlyForSmolLM) {
  const Tokenizer gpt2(tiny_vocab({"Ġ 1", "Ġ1 2", "1 2"}, "gpt2"));
  EXPECT_EQ(pieces(gpt2, gpt2.encode(" 12")), (Strings{"Ġ12"}));
  const Tokenizer smollm(tiny_vocab({"Ġ 1", "Ġ1 2", "1 2"}, "smollm"));
  EXPECT_EQ(pieces(smollm, smollm.encode(" 12")), (Strings{"Ġ", "1", "2"}));
}

TEST(TokenizerTiny, BadVocabulariesAreRefusedWithTheReason) {
  auto message = [](BpeVocab v) -> std::string {
    try {
      Tokenizer tok(std::move(v));
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  BpeVocab no_a = tiny_vocab({});
  no_a.tokens['a'] = "A-less";
  EXPECT_NE(message(no_a).find("no token for byte 0x61 (\"a\")"), std::string::npos) << message(no_a);
  BpeVocab bad_merge = tiny_vocab({"a b"});
  bad_merge.merges.push_back("x yz");
  EXPECT_NE(message(bad_merge).find("merge #1 \"x yz\": \"yz\" is not in the vocabulary"), std::string::npos)
      << message(bad_merge);
  BpeVocab bad_pre = tiny_vocab({});
  bad_pre.pre = "llama3";
  EXPECT_NE(message(bad_pre).find("unsupported pre-tokenizer \"llama3\""), std::string::npos);
  BpeVocab bad_types = tiny_vocab({});
  bad_types.token_types.pop_back();
  EXPECT_NE(message(bad_types).find("token types for"), std::string::npos);
  EXPECT_THROW(Tokenizer(tiny_vocab({})).decode({100000}), Error);
}

std::string write_temp(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(TokenizerJson, LoadsBothMergeFormsAndAddedTokens) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; b++) vocab[byte_symbol(b)] = b;
  vocab["ab"] = 256;
  vocab["Ġab"] = 257;
  vocab["Ġa"] = 258;
  nlohmann::json j = {
      {"version", "1.0"},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}}},
      {"added_tokens",
       {{{"id", 259}, {"content", "<|im_end|>"}, {"special", true}},
        {{"id", 260}, {"content", "<tool>"}, {"special", false}}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"Ġ a", nlohmann::json::array({"Ġa", "b"}), "a b"}}}}};
  const BpeVocab v = load_tokenizer_json(write_temp("tiny_tokenizer.json", j.dump()));
  EXPECT_EQ(v.pre, "smollm");
  EXPECT_EQ(v.merges, (Strings{"Ġ a", "Ġa b", "a b"}));
  ASSERT_EQ(v.tokens.size(), 261u);
  EXPECT_EQ(v.token_types[259], kTokenControl);
  EXPECT_EQ(v.token_types[260], kTokenUserDefined);
  const Tokenizer tok(v);
  EXPECT_EQ(tok.encode("ab ab<|im_end|><tool>7"), (std::vector<int32_t>{256, 257, 259, 260, '7'}));

  // In a Hugging Face snapshot folder, bos/eos/pad come from tokenizer_config.json.
  const std::string snapshot = ::testing::TempDir() + "owlore_tokenizer_snapshot/";
  std::filesystem::create_directories(snapshot);
  std::ofstream(snapshot + "tokenizer.json") << j.dump();
  std::ofstream(snapshot + "tokenizer_config.json")
      << R"({"bos_token": "<tool>", "eos_token": {"content": "<|im_end|>", "special": true}, "pad_token": null})";
  const BpeVocab with_config = load_tokenizer_json(snapshot + "tokenizer.json");
  EXPECT_EQ(with_config.bos, 260);
  EXPECT_EQ(with_config.eos, 259);
  EXPECT_EQ(with_config.pad, -1);
  EXPECT_EQ(v.bos, -1);

  // A pre-tokenizer owlore cannot reproduce is refused, naming the file.
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  const std::string path = write_temp("metaspace_tokenizer.json", j.dump());
  try {
    load_tokenizer_json(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": unsupported pre_tokenizer"), std::string::npos) << e.what();
  }
  j["pre_tokenizer"] = {{"type", "ByteLevel"}};
  j["model"]["merges"].push_back(42);
  try {
    load_tokenizer_json(write_temp("bad_merge_tokenizer.json", j.dump()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.merges[3] is 42"), std::string::npos) << e.what();
  }
  j["model"]["merges"].erase(3);
  j["added_tokens"][1]["lstrip"] = true;
  try {
    load_tokenizer_json(write_temp("lstrip_tokenizer.json", j.dump()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("added_tokens[1] \"<tool>\" has lstrip=true"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_tokenizer_json(write_temp("broken_tokenizer.json", "{\"model\": ")), Error);
  EXPECT_THROW(load_tokenizer_json(kDataDir + "does_not_exist.json"), Error);
}

// A key of the wrong type is an owlore::Error naming the key and what was expected (not
// nlohmann's type_error), and so is nesting deeper than any tokenizer.json has: printing or
// copying such a value would recurse once per level, past the end of the stack.
TEST(TokenizerJson, WrongTypesAndDeepNestingAreErrorsNamingTheKey) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; b++) vocab[byte_symbol(b)] = b;
  const nlohmann::json good = {
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"added_tokens", {{{"id", 256}, {"content", "<|im_end|>"}, {"special", true}, {"lstrip", false}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  EXPECT_EQ(Tokenizer(parse_tokenizer_json(good.dump(), "mem/tokenizer.json")).size(), 257);
  auto expect_refused = [&](const std::string& label, const std::function<void(nlohmann::json&)>& edit,
                            const std::string& message) {
    nlohmann::json j = good;
    edit(j);
    try {
      parse_tokenizer_json(j.dump(), "mem/tokenizer.json");
      ADD_FAILURE() << label << ": expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mem/tokenizer.json: " + message), std::string::npos) << label << ": "
                                                                                                 << e.what();
    }
  };
  expect_refused("model.type", [](nlohmann::json& j) { j["model"]["type"] = 5; }, "model.type is 5, expected a string");
  expect_refused("ignore_merges", [](nlohmann::json& j) { j["model"]["ignore_merges"] = "yes"; },
                 "model.ignore_merges is \"yes\", expected true or false");
  expect_refused("pre_tokenizer.type", [](nlohmann::json& j) { j["pre_tokenizer"]["type"] = {1}; },
                 "pre_tokenizer.type is [1], expected a string");
  expect_refused("use_regex", [](nlohmann::json& j) { j["pre_tokenizer"]["use_regex"] = 1; },
                 "pre_tokenizer.use_regex is 1, expected true or false");
  expect_refused(
      "individual_digits",
      [](nlohmann::json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", "true"}}, {{"type", "ByteLevel"}}}}};
      },
      "pre_tokenizer.pretokenizers[0].individual_digits is \"true\", expected true or false");
  expect_refused("special", [](nlohmann::json& j) { j["added_tokens"][0]["special"] = 1; },
                 "added_tokens[0].special is 1, expected true or false");
  expect_refused("lstrip", [](nlohmann::json& j) { j["added_tokens"][0]["lstrip"] = "no"; },
                 "added_tokens[0].lstrip is \"no\", expected true or false");
  // A null flag counts as absent, as in Hugging Face's own files.
  nlohmann::json nulls = good;
  nulls["model"]["ignore_merges"] = nullptr;
  nulls["added_tokens"][0]["special"] = nullptr;
  const BpeVocab v = parse_tokenizer_json(nulls.dump(), "mem/tokenizer.json");
  EXPECT_FALSE(v.ignore_merges);
  EXPECT_EQ(v.token_types[256], kTokenUserDefined);

  // 64 levels of arrays under the root object are parsed (and then refused for what they are);
  // 65 are refused while parsing.
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  const std::string head = good.dump().substr(0, good.dump().size() - 1);
  try {
    parse_tokenizer_json(head + ",\"normalizer\":" + nested(64) + "}", "mem/tokenizer.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("normalizer [[["), std::string::npos) << e.what();
  }
  for (int depth : {65, 200000}) {
    try {
      parse_tokenizer_json(head + ",\"normalizer\":" + nested(depth) + "}", "mem/tokenizer.json");
      ADD_FAILURE() << depth << " levels: expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mem/tokenizer.json: JSON nested deeper than 64 levels"), std::string::npos)
          << e.what();
    }
  }
}

// ---- SmolLM2: ids identical to Hugging Face tokenizers ----

const nlohmann::json& golden() {
  static const nlohmann::json g = nlohmann::json::parse(read_text_file(kDataDir + "tokenizer_golden.json"));
  return g;
}

const Tokenizer& smollm2() {
  static const Tokenizer tok = [] {
    BpeVocab v = load_tokenizer_json(kDataDir + "smollm2_tokenizer.json");
    v.bos = golden()["bos"];
    v.eos = golden()["eos"];
    v.pad = golden()["pad"];
    return Tokenizer(std::move(v));
  }();
  return tok;
}

// On a mismatch, says where the ids part and what text the two sides tokenized there.
void expect_golden_ids(const std::string& label, const std::string& text, const std::vector<int32_t>& expected) {
  const Tokenizer& tok = smollm2();
  const std::vector<int32_t> ids = tok.encode(text);
  size_t first = 0;
  while (first < ids.size() && first < expected.size() && ids[first] == expected[first]) first++;
  if (first != ids.size() || first != expected.size()) {
    std::ostringstream where;
    for (size_t i = first; i < first + 4; i++) {
      where << "\n  [" << i << "] owlore "
            << (i < ids.size() ? "'" + tok.token_bytes(ids[i]) + "'(" + std::to_string(ids[i]) + ")" : "-")
            << "  hf "
            << (i < expected.size() ? "'" + tok.token_bytes(expected[i]) + "'(" + std::to_string(expected[i]) + ")"
                                    : "-");
    }
    ADD_FAILURE() << label << ": " << ids.size() << " ids vs " << expected.size() << " golden, first difference at "
                  << first << where.str();
  }
  EXPECT_EQ(tok.decode(ids), text) << label;
}

TEST(TokenizerSmolLM2, VocabularyMatchesTheGguf) {
  const Tokenizer& tok = smollm2();
  EXPECT_EQ(tok.size(), golden()["vocab_size"].get<int>());
  EXPECT_EQ(tok.vocab().pre, "smollm");
  EXPECT_EQ(tok.vocab().merges.size(), 48900u);
  EXPECT_EQ(tok.token_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok.token_id("<|im_start|>"), 1);
  EXPECT_EQ(tok.token_id("<|im_end|>"), 2);
  int specials = 0;
  for (int id = 0; id < tok.size(); id++) specials += tok.is_special(id);
  EXPECT_EQ(specials, 17);
}

TEST(TokenizerSmolLM2, ShakespeareMatchesHuggingFace) {
  const auto& g = golden()["shakespeare"];
  expect_golden_ids("shakespeare", g["text"], g["ids"].get<std::vector<int32_t>>());
}

TEST(TokenizerSmolLM2, TortureTextsMatchHuggingFace) {
  for (const auto& t : golden()["torture"])
    expect_golden_ids(nlohmann::json(t["text"]).dump(), t["text"], t["ids"].get<std::vector<int32_t>>());
}

TEST(TokenizerSmolLM2, Gsm8kChatMatchesHuggingFaceAndTheJinjaTemplate) {
  int n = 0;
  for (const auto& ex : golden()["gsm8k_chat"]) {
    const std::string text = format_chat(ChatTemplate::kChatML, {{"user", ex["question"]}, {"assistant", ex["answer"]}}, false);
    EXPECT_EQ(text, ex["text"].get<std::string>()) << "GSM8K sample " << n;
    expect_golden_ids("GSM8K sample " + std::to_string(n), ex["text"], ex["ids"].get<std::vector<int32_t>>());
    n++;
  }
  EXPECT_EQ(n, 50);
}

TEST(TokenizerSmolLM2, ChatTemplateCases) {
  for (const auto& c : golden()["chat_template_cases"]) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(format_chat(ChatTemplate::kChatML, messages, c["add_generation_prompt"]), c["text"].get<std::string>());
  }
  EXPECT_EQ(format_chat(ChatTemplate::kChatML, {{"system", "Be terse."}, {"user", "Q"}}, true),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
}

TEST(TokenizerSmolLM2, WholeShakespeareAndRandomBytesRoundTrip) {
  const Tokenizer& tok = smollm2();
  const std::string text = read_text_file(std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt");
  const std::vector<int32_t> ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_LT(ids.size(), text.size() / 3) << "BPE should compress English well below one token per 3 bytes";
  // Random bytes, mostly not UTF-8, from the 235 bytes SmolLM2 has symbols for: lossless. The
  // other 21 are dropped, as HF drops them, and counted.
  std::vector<int> known;
  for (int b = 0; b < 256; b++)
    if (!tok.encode(std::string(1, (char)b), false).empty()) known.push_back(b);
  EXPECT_EQ(known.size(), 235u);
  Rng rng(11);
  for (int trial = 0; trial < 100; trial++) {
    std::string bytes(1 + rng.below(300), '\0');
    for (char& c : bytes) c = (char)known[rng.below(known.size())];
    EXPECT_EQ(tok.decode(tok.encode(bytes)), bytes) << "trial " << trial;
  }
  const int64_t dropped_before = tok.dropped_bytes();
  EXPECT_EQ(tok.decode(tok.encode("a\x04z\xff")), "az");
  EXPECT_EQ(tok.dropped_bytes() - dropped_before, 2);
}

// The vocabulary straight from the GGUF (what the trainer uses) must be the committed one. The
// 94 MiB GGUF is not in the repository: $OWLORE_GGUF or the first ~/.cache/owlore/*.gguf
// (tools/fetch_smollm2.sh), skipped when neither exists.
TEST(TokenizerSmolLM2, GgufVocabularyEncodesLikeTheCommittedOne) {
  std::string path = std::getenv("OWLORE_GGUF") ? std::getenv("OWLORE_GGUF") : "";
  const char* home = std::getenv("HOME");
  if (path.empty() && home && std::filesystem::is_directory(std::string(home) + "/.cache/owlore"))
    for (const auto& entry : std::filesystem::directory_iterator(std::string(home) + "/.cache/owlore"))
      if (entry.path().extension() == ".gguf") path = entry.path().string();
  if (path.empty()) GTEST_SKIP() << "no SmolLM2 GGUF ($OWLORE_GGUF or ~/.cache/owlore/*.gguf)";
  const GgufFile gguf(path);
  ASSERT_EQ(gguf.tokenizer_model(), "gpt2");
  const Tokenizer tok(gguf_bpe_vocab(gguf));
  EXPECT_EQ(tok.vocab().tokens, smollm2().vocab().tokens);
  EXPECT_EQ(tok.vocab().merges, smollm2().vocab().merges);
  EXPECT_EQ(tok.vocab().token_types, smollm2().vocab().token_types);
  EXPECT_EQ(tok.vocab().bos, golden()["bos"].get<int>());
  EXPECT_EQ(tok.vocab().eos, golden()["eos"].get<int>());
  for (const auto& t : golden()["torture"]) EXPECT_EQ(tok.encode(t["text"]), t["ids"].get<std::vector<int32_t>>());
  const auto& g = golden()["shakespeare"];
  EXPECT_EQ(tok.encode(g["text"]), g["ids"].get<std::vector<int32_t>>());
}

}  // namespace
}  // namespace owlore
