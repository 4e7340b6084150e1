// SentencePiece BPE (io/sentencepiece.h) against the sentencepiece library itself, on the real
// Mistral v0.1 and v0.3 models (tools/fetch_tokenizers.sh) and Tiny Shakespeare.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/sentencepiece.h"
#include "io/tokenizer.h"

namespace owlore {
namespace {

std::string model_path(const std::string& version) {
  const char* cache = std::getenv("OWLORE_CACHE");
  const std::string root = cache ? cache : std::string(std::getenv("HOME") ? std::getenv("HOME") : "") + "/.cache/owlore";
  const std::string path = root + "/tokenizers/mistral/tokenizer.model." + version;
  return std::ifstream(path).good() ? path : "";
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void compare_on_shakespeare(const std::string& version) {
  const std::string path = model_path(version);
  if (path.empty()) GTEST_SKIP() << "no " << version << " model: run tools/fetch_tokenizers.sh";
  sentencepiece::SentencePieceProcessor ref;
  ASSERT_TRUE(ref.Load(path).ok());
  const Tokenizer tok(load_sentencepiece_model(path));
  const std::string text = read(std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt");
  ASSERT_FALSE(text.empty());
  size_t chunks = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find("\n\n", pos);
    end = end == std::string::npos ? text.size() : end + 2;
    const std::string chunk = text.substr(pos, end - pos);
    std::vector<int> want;
    ref.Encode(chunk, &want);
    const std::vector<int32_t> got = tok.encode(chunk, /*parse_special=*/false);
    ASSERT_EQ(std::vector<int>(got.begin(), got.end()), want) << version << " at byte " << pos << ": " << chunk;
    std::vector<Tokenizer::Span> spans;
    tok.encode_with_spans(chunk, spans, false);
    ASSERT_EQ(spans.size(), got.size());
    ASSERT_EQ(tok.decode(got), chunk) << chunk;
    pos = end;
    chunks++;
  }
  EXPECT_GT(chunks, 1000u);
}

TEST(SentencePiece, MistralV1MatchesSentencepieceOnShakespeare) { compare_on_shakespeare("v1"); }
TEST(SentencePiece, MistralV3MatchesSentencepieceOnShakespeare) { compare_on_shakespeare("v3"); }

// The torture strings of tools/ref/make_tokenizer_golden.py (whitespace runs, scripts, emoji,
// exotic spaces), taken from its committed golden file.
TEST(SentencePiece, MatchesSentencepieceOnTortureStrings) {
  const auto golden = nlohmann::json::parse(read(std::string(OWLORE_SOURCE_DIR) + "/tests/data/tokenizer_golden.json"));
  for (const char* version : {"v1", "v3"}) {
    const std::string path = model_path(version);
    if (path.empty()) GTEST_SKIP() << "no " << version << " model: run tools/fetch_tokenizers.sh";
    sentencepiece::SentencePieceProcessor ref;
    ASSERT_TRUE(ref.Load(path).ok());
    const Tokenizer tok(load_sentencepiece_model(path));
    for (const auto& item : golden["torture"]) {
      const std::string text = item["text"].get<std::string>();
      std::vector<int> want;
      ref.Encode(text, &want);
      const std::vector<int32_t> got = tok.encode(text, /*parse_special=*/false);
      EXPECT_EQ(std::vector<int>(got.begin(), got.end()), want) << version << ": " << text;
      std::string ref_text;
      ref.Decode(want, &ref_text);
      if (ref_text == text) EXPECT_EQ(tok.decode(got), text) << version;
    }
  }
}

TEST(SentencePiece, DummyPrefixTokenHasEmptySpan) {
  const std::string path = model_path("v1");
  if (path.empty()) GTEST_SKIP() << "no v1 model: run tools/fetch_tokenizers.sh";
  const Tokenizer tok(load_sentencepiece_model(path));
  std::vector<Tokenizer::Span> spans;
  const auto ids = tok.encode_with_spans("1 hi", spans);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(tok.vocab().tokens[ids[0]], "\xE2\x96\x81");
  EXPECT_EQ(spans[0].begin, 0u);
  EXPECT_EQ(spans[0].end, 0u);
  EXPECT_EQ(tok.decode(ids), "1 hi");
}

}  // namespace
}  // namespace owlore
