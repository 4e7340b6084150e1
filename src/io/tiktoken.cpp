#include "io/tiktoken.h"

#include <limits>
#include <unordered_map>
#include <vector>

#include "base/error.h"
#include "io/files.h"

namespace owlore {

namespace {

// The special tokens of llama_models/llama3/tokenizer.py (llama-models 0.3.0), ids from the
// number of ranks on; the rest of its 256 are <|reserved_special_token_2|> and up.
constexpr const char* kLlama3Specials[] = {
    "<|begin_of_text|>", "<|end_of_text|>",    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",          "<|end_header_id|>",
    "<|eom_id|>",        "<|eot_id|>",         "<|python_tag|>",               "<|image|>"};
constexpr int kLlama3SpecialCount = 256;

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with '=' padding; false on anything else.
bool decode_base64(const char* s, size_t n, std::string& out) {
  out.clear();
  if (n == 0 || n % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && s[n - 1 - pad] == '=') pad++;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n - pad; i++) {
    const int v = base64_value(s[i]);
    if (v < 0) return false;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += (char)((acc >> bits) & 0xFF);
    }
  }
  return true;
}

}  // namespace

bool looks_like_tiktoken(const std::string& prefix) {
  const size_t space = prefix.find(' ');
  if (space == std::string::npos || space == 0) return false;
  std::string bytes;
  if (!decode_base64(prefix.data(), space, bytes)) return false;
  size_t i = space + 1, digits = 0;
  while (i < prefix.size() && prefix[i] >= '0' && prefix[i] <= '9') i++, digits++;
  return digits > 0 && (i == prefix.size() || prefix[i] == '\n' || prefix[i] == '\r');
}

BpeVocab parse_tiktoken_model(const std::string& text, const std::string& path) {
  std::vector<std::string> by_rank;
  std::unordered_map<std::string, int> rank_of;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    line_no++;
    size_t stop = end;
    if (stop > pos && text[stop - 1] == '\r') stop--;
    const size_t begin = pos;
    pos = end + 1;
    if (stop == begin) continue;  // blank lines, as tiktoken's loader skips them
    const size_t space = text.find(' ', begin);
    std::string bytes;
    OWLORE_REQUIRE(space != std::string::npos && space < stop && decode_base64(text.data() + begin, space - begin, bytes) &&
                       !bytes.empty(),
                   path, ":", line_no, ": expected \"base64-token rank\", got \"", text.substr(begin, std::min<size_t>(stop - begin, 80)), "\"");
    int64_t rank = 0;
    OWLORE_REQUIRE(space + 1 < stop, path, ":", line_no, ": missing rank");
    for (size_t i = space + 1; i < stop; i++) {
      OWLORE_REQUIRE(text[i] >= '0' && text[i] <= '9' && rank < (1 << 30), path, ":", line_no,
                     ": rank \"", text.substr(space + 1, stop - space - 1), "\" is not a non-negative integer");
      rank = rank * 10 + (text[i] - '0');
    }
    // Ranks are token ids: they must run 0, 1, 2, ... in file order for ids to be dense.
    OWLORE_REQUIRE(rank == (int64_t)by_rank.size(), path, ":", line_no, ": rank ", rank, ", expected ",
                   by_rank.size(), " (ranks must be dense and in order)");
    const auto [it, fresh] = rank_of.emplace(bytes, (int)rank);
    OWLORE_REQUIRE(fresh, path, ":", line_no, ": token bytes already have rank ", it->second);
    by_rank.push_back(std::move(bytes));
  }
  OWLORE_REQUIRE(!by_rank.empty(), path, ": no tokens (expected \"base64-token rank\" lines)");
  for (int b = 0; b < 256; b++)
    OWLORE_REQUIRE(rank_of.count(std::string(1, (char)b)), path, ": no token for byte 0x", std::hex, b,
                   ": not a byte-level BPE");

  BpeVocab v;
  const int n = (int)by_rank.size();
  v.tokens.reserve(n + kLlama3SpecialCount);
  for (const std::string& bytes : by_rank) v.tokens.push_back(byte_level_string(bytes));
  v.token_types.assign(n, kTokenNormal);

  // Rank-BPE of each token's own bytes, lower ranks only: two parts left means the token is
  // their merge; more means rank-BPE never builds it (only the whole-piece lookup finds it).
  std::vector<std::string> parts;
  for (int r = 0; r < n; r++) {
    const std::string& token = by_rank[r];
    if (token.size() < 2) continue;
    parts.clear();
    for (char c : token) parts.emplace_back(1, c);
    while (parts.size() > 2) {
      int best = -1, best_rank = r;
      for (size_t i = 0; i + 1 < parts.size(); i++) {
        const auto it = rank_of.find(parts[i] + parts[i + 1]);
        if (it != rank_of.end() && it->second < best_rank) best = (int)i, best_rank = it->second;
      }
      if (best < 0) break;
      parts[best] += parts[best + 1];
      parts.erase(parts.begin() + best + 1);
    }
    if (parts.size() == 2) v.merges.push_back(byte_level_string(parts[0]) + " " + byte_level_string(parts[1]));
  }

  for (int i = 0; i < kLlama3SpecialCount; i++) {
    const int count = (int)(sizeof(kLlama3Specials) / sizeof(kLlama3Specials[0]));
    v.tokens.push_back(i < count ? std::string(kLlama3Specials[i])
                                 : "<|reserved_special_token_" + std::to_string(2 + i - count) + "|>");
    v.token_types.push_back(kTokenControl);
  }
  auto special = [&](const char* name) {
    for (int i = n; i < (int)v.tokens.size(); i++)
      if (v.tokens[i] == name) return i;
    fail("tiktoken: no special token ", name, " (internal error)");
  };
  v.bos = special("<|begin_of_text|>");
  v.eos = special("<|end_of_text|>");
  v.pad = special("<|finetune_right_pad_id|>");
  v.pre = "llama-bpe";
  v.ignore_merges = true;
  return v;
}

BpeVocab load_tiktoken_model(const std::string& path) {
  return parse_tiktoken_model(read_regular_file(path, "tokenizer.model"), path);
}

}  // namespace owlore
