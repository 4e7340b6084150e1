#include "io/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <queue>

#include "base/error.h"
#include "io/files.h"
#include "io/sentencepiece.h"

namespace owlore {

const ChoiceTable<TokenizerModel, 2> kTokenizerModels = {{{"gpt2", TokenizerModel::kGpt2}, {"llama", TokenizerModel::kLlama}}};

const char* const kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// HF tokenizers' ByteLevel regex (GPT-2's, plus the final \s+ that catches a lone whitespace
// character before a non-space, e.g. "\t" in "\tx").
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// HF Digits(individual_digits=true) isolates every char::is_numeric() character: Nd, Nl, No.
constexpr const char* kDigitPattern = R"(\p{N})";

// A piece cache stops helping long before it costs much memory; clear it past this size.
constexpr size_t kMaxCachedPieces = 1 << 18;

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += (char)cp;
  } else if (cp < 0x800) {
    out += (char)(0xC0 | (cp >> 6));
    out += (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += (char)(0xE0 | (cp >> 12));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  } else {
    out += (char)(0xF0 | (cp >> 18));
    out += (char)(0x80 | ((cp >> 12) & 0x3F));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  }
}

// Length of the UTF-8 sequence starting at s[0] (1 for a stray byte) and its code point
// (-1 when the sequence is not valid UTF-8).
size_t next_utf8(const char* s, size_t n, int64_t& cp) {
  const unsigned char c = (unsigned char)s[0];
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n) {
    cp = -1;
    return 1;
  }
  int64_t value = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t i = 1; i < len; i++) {
    const unsigned char cc = (unsigned char)s[i];
    if ((cc >> 6) != 2) {
      cp = -1;
      return 1;
    }
    value = (value << 6) | (cc & 0x3F);
  }
  cp = value;
  return len;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, 0x7F-0xA0, 0xAD) are shifted to U+0100.. so every byte is a visible char.
std::vector<uint32_t> byte_to_codepoint() {
  std::vector<uint32_t> map(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; b++) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
  uint32_t shifted = 256;
  for (int b = 0; b < 256; b++) map[b] = direct[b] ? (uint32_t)b : shifted++;
  return map;
}

uint64_t pair_key(int left, int right) { return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right; }

}  // namespace

std::string byte_level_string(const std::string& bytes) {
  static const std::vector<uint32_t> byte_cp = byte_to_codepoint();
  std::string symbols;
  for (unsigned char b : bytes) append_utf8(symbols, byte_cp[b]);
  return symbols;
}

struct Tokenizer::Regexes {
  pcre2_code* split = nullptr;
  pcre2_code* digits = nullptr;
  pcre2_match_data* match = nullptr;

  static pcre2_code* compile(const char* pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // MATCH_INVALID_UTF: bytes that are not UTF-8 simply never match (instead of failing the
    // whole call), so arbitrary data still tokenizes; see encode_split.
    pcre2_code* code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail("pre-tokenizer regex does not compile at offset ", offset, ": ", (const char*)message);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
    return code;
  }
  ~Regexes() {
    if (match) pcre2_match_data_free(match);
    if (split) pcre2_code_free(split);
    if (digits) pcre2_code_free(digits);
  }

  // Calls emit(begin, end, true) for each match of code in [0, n) and emit(begin, end, false)
  // for each stretch between matches.
  template <typename Emit>
  void for_each_piece(pcre2_code* code, const char* text, size_t n, Emit&& emit) {
    size_t pos = 0, done = 0;
    while (pos < n) {
      const int rc = pcre2_match(code, (PCRE2_SPTR)text, n, pos, 0, match, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        fail("pre-tokenizer regex failed at byte ", pos, ": ", (const char*)message);
      }
      // Copied out before emit runs: emit may match again with the same match data.
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
      const size_t begin = ovector[0], end = ovector[1];
      if (begin > done) emit(done, begin, false);
      if (end > begin) emit(begin, end, true);
      done = std::max(done, end);
      pos = end > begin ? end : begin + 1;  // no pattern here matches empty; stay safe anyway
    }
    if (done < n) emit(done, n, false);
  }
};

Tokenizer::Tokenizer(BpeVocab vocab) : vocab_(std::move(vocab)), regex_(std::make_unique<Regexes>()) {
  const int n = (int)vocab_.tokens.size();
  OWLORE_REQUIRE(n > 0, "tokenizer: empty vocabulary");
  if (vocab_.token_types.empty()) vocab_.token_types.assign(n, kTokenNormal);
  OWLORE_REQUIRE((int)vocab_.token_types.size() == n, "tokenizer: ", vocab_.token_types.size(),
                 " token types for ", n, " tokens");
  for (const auto& [name, id] : {std::pair<const char*, int>{"bos", vocab_.bos}, {"eos", vocab_.eos}, {"pad", vocab_.pad}})
    OWLORE_REQUIRE(id >= -1 && id < n, "tokenizer: ", name, " id ", id, " outside the vocabulary of ", n);
  if (vocab_.model == TokenizerModel::kLlama) {
    init_sentencepiece();
    return;
  }

  const char* split_pattern = kGpt2Pattern;
  if (vocab_.pre == "gpt2") {
    split_digits_ = false;
  } else if (vocab_.pre == "smollm") {
    split_digits_ = true;
  } else if (vocab_.pre == "llama-bpe") {
    split_digits_ = false;
    split_pattern = kLlama3SplitPattern;
  } else {
    fail("tokenizer: unsupported pre-tokenizer \"", vocab_.pre, "\" (supported: gpt2, smollm, llama-bpe)");
  }
  regex_->split = Regexes::compile(split_pattern);
  regex_->digits = Regexes::compile(kDigitPattern);
  regex_->match = pcre2_match_data_create(1, nullptr);
  OWLORE_REQUIRE(regex_->match, "tokenizer: out of memory for PCRE2 match data");

  token_ids_.reserve(n);
  for (int id = 0; id < n; id++) token_ids_.emplace(vocab_.tokens[id], id);  // first id wins on duplicates

  const std::vector<uint32_t> byte_cp = byte_to_codepoint();
  std::vector<int> cp_byte(512, -1);
  for (int b = 0; b < 256; b++) {
    cp_byte[byte_cp[b]] = b;
    std::string symbol;
    append_utf8(symbol, byte_cp[b]);
    byte_token_[b] = token_id(symbol);
    // Real vocabularies lack some bytes (SmolLM2 has no symbol for 21 of them: 0xC0, 0xF5..0xFF,
    // a few controls); HF drops such bytes, and so do we (counted, see dropped_bytes). Printable
    // ASCII must be there, or this is not a byte-level vocabulary at all.
    if (byte_token_[b] < 0 && b >= 0x20 && b < 0x7F)
      fail("tokenizer: vocabulary has no token for byte 0x", std::hex, b, " (\"", symbol,
           "\"): not a byte-level BPE vocabulary");
  }

  merge_of_pair_.reserve(vocab_.merges.size());
  for (size_t rank = 0; rank < vocab_.merges.size(); rank++) {
    const std::string& merge = vocab_.merges[rank];
    const size_t space = merge.find(' ');
    OWLORE_REQUIRE(space != std::string::npos && space > 0 && space + 1 < merge.size() &&
                       merge.find(' ', space + 1) == std::string::npos,
                   "tokenizer: merge #", rank, " \"", merge, "\" is not two tokens separated by one space");
    const std::string left = merge.substr(0, space), right = merge.substr(space + 1);
    const int left_id = token_id(left), right_id = token_id(right), merged_id = token_id(left + right);
    OWLORE_REQUIRE(left_id >= 0 && right_id >= 0 && merged_id >= 0, "tokenizer: merge #", rank, " \"", merge,
                   "\": \"", left_id < 0 ? left : right_id < 0 ? right : left + right, "\" is not in the vocabulary");
    merge_of_pair_.emplace(pair_key(left_id, right_id), std::make_pair((int)rank, merged_id));  // lowest rank wins
  }

  special_.assign(n, 0);
  specials_by_first_byte_.assign(256, {});
  token_bytes_.resize(n);
  for (int id = 0; id < n; id++) {
    const std::string& token = vocab_.tokens[id];
    const int type = vocab_.token_types[id];
    if ((type == kTokenControl || type == kTokenUserDefined) && !token.empty()) {
      special_[id] = 1;
      specials_by_first_byte_[(unsigned char)token[0]].push_back(id);
      token_bytes_[id] = token;  // specials stand for their literal text, as HF decodes added tokens
      continue;
    }
    std::string bytes;
    for (size_t i = 0; i < token.size();) {
      int64_t cp;
      const size_t len = next_utf8(token.data() + i, token.size() - i, cp);
      if (cp >= 0 && cp < (int64_t)cp_byte.size() && cp_byte[cp] >= 0)
        bytes += (char)cp_byte[cp];
      else  // not a byte-level symbol: HF's ByteLevel decoder passes such characters through
        bytes.append(token, i, len);
      i += len;
    }
    token_bytes_[id] = std::move(bytes);
  }
  // Leftmost-longest: at one position the longest special wins ("<|im_end|>" over a prefix of it).
  for (auto& ids : specials_by_first_byte_)
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int a, int b) { return vocab_.tokens[a].size() > vocab_.tokens[b].size(); });
}

// A "llama" vocabulary: SentencePieceBpe encodes the text between specials; specials, token ids
// and token bytes are kept here as for byte-level BPE.
void Tokenizer::init_sentencepiece() {
  const int n = (int)vocab_.tokens.size();
  OWLORE_REQUIRE(vocab_.unk >= -1 && vocab_.unk < n, "tokenizer: unk id ", vocab_.unk, " outside the vocabulary of ", n);
  spm_ = std::make_unique<SentencePieceBpe>(vocab_);
  token_ids_.reserve(n);
  for (int id = 0; id < n; id++) token_ids_.emplace(vocab_.tokens[id], id);  // first id wins on duplicates
  for (int b = 0; b < 256; b++) byte_token_[b] = spm_->byte_token((unsigned char)b);
  special_.assign(n, 0);
  specials_by_first_byte_.assign(256, {});
  token_bytes_.resize(n);
  for (int id = 0; id < n; id++) {
    const std::string& token = vocab_.tokens[id];
    const int type = vocab_.token_types[id];
    if ((type == kTokenControl || type == kTokenUserDefined) && !token.empty()) {
      special_[id] = 1;
      specials_by_first_byte_[(unsigned char)token[0]].push_back(id);
      token_bytes_[id] = token;
    } else {
      token_bytes_[id] = spm_->token_text(id);
    }
  }
  for (auto& ids : specials_by_first_byte_)
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int a, int b) { return vocab_.tokens[a].size() > vocab_.tokens[b].size(); });
}

void Tokenizer::encode_sentencepiece(const std::string& text, std::vector<int32_t>& ids, std::vector<Span>* spans,
                                     bool parse_special) const {
  const char* s = text.data();
  const size_t n = text.size();
  auto ordinary = [&](size_t begin, size_t end) {
    const bool prefix = vocab_.space_prefix == SpacePrefix::kAlways || (vocab_.space_prefix == SpacePrefix::kFirst && begin == 0);
    spm_->encode(s + begin, end - begin, prefix, ids, spans, (uint32_t)begin);
  };
  size_t segment = 0;
  for (size_t i = 0; parse_special && i < n;) {
    int hit = -1;
    for (int id : specials_by_first_byte_[(unsigned char)s[i]]) {
      const std::string& special = vocab_.tokens[id];
      if (special.size() <= n - i && std::memcmp(s + i, special.data(), special.size()) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      i++;
      continue;
    }
    ordinary(segment, i);
    ids.push_back(hit);
    if (spans) spans->push_back({(uint32_t)i, (uint32_t)(i + vocab_.tokens[hit].size())});
    i += vocab_.tokens[hit].size();
    segment = i;
  }
  ordinary(segment, n);
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

int Tokenizer::token_id(const std::string& token) const {
  const auto it = token_ids_.find(token);
  return it == token_ids_.end() ? -1 : it->second;
}

int Tokenizer::require_token(const std::string& token) const {
  const int id = token_id(token);
  OWLORE_REQUIRE(id >= 0, "tokenizer: the vocabulary has no token \"", token, "\"");
  return id;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  OWLORE_REQUIRE(id >= 0 && id < size(), "tokenizer: token id ", id, " outside the vocabulary of ", size());
  return token_bytes_[id];
}

bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < size() && special_[id]; }

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_append(text, ids, parse_special);
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_spans(const std::string& text, std::vector<Span>& spans,
                                                  bool parse_special) const {
  OWLORE_REQUIRE(text.size() <= UINT32_MAX, "tokenizer: a text of ", text.size(), " bytes is too long for spans");
  if (spm_) {
    std::vector<int32_t> ids;
    spans.clear();
    encode_sentencepiece(text, ids, &spans, parse_special);
    return ids;
  }
  std::vector<int32_t> ids = encode(text, parse_special);
  // Byte-level BPE is lossless except for bytes the vocabulary lacks, so each token's bytes are
  // the next bytes of the text once dropped bytes are skipped.
  spans.clear();
  spans.reserve(ids.size());
  size_t pos = 0;
  for (int32_t id : ids) {
    while (pos < text.size() && !has_byte((unsigned char)text[pos])) pos++;
    const std::string& bytes = token_bytes(id);
    OWLORE_REQUIRE(text.compare(pos, bytes.size(), bytes) == 0, "tokenizer: token ", id,
                   " does not match the text at byte ", pos, " (internal error)");
    spans.push_back({(uint32_t)pos, (uint32_t)(pos + bytes.size())});
    pos += bytes.size();
  }
  return ids;
}

void Tokenizer::encode_append(const std::string& text, std::vector<int32_t>& ids, bool parse_special) const {
  if (spm_) {
    encode_sentencepiece(text, ids, nullptr, parse_special);
    return;
  }
  const char* s = text.data();
  const size_t n = text.size();
  if (!parse_special) {
    encode_ordinary(s, n, ids);
    return;
  }
  size_t segment = 0;
  for (size_t i = 0; i < n;) {
    int hit = -1;
    for (int id : specials_by_first_byte_[(unsigned char)s[i]]) {
      const std::string& special = vocab_.tokens[id];
      if (special.size() <= n - i && std::memcmp(s + i, special.data(), special.size()) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      i++;
      continue;
    }
    encode_ordinary(s + segment, i - segment, ids);
    ids.push_back(hit);
    i += vocab_.tokens[hit].size();
    segment = i;
  }
  encode_ordinary(s + segment, n - segment, ids);
}

void Tokenizer::encode_ordinary(const char* text, size_t n, std::vector<int32_t>& ids) const {
  if (n == 0) return;
  // Each text between specials is its own regex subject, as in HF: the (?!\S) lookahead must
  // not see past a special token or past an isolated digit. The split pattern matches every
  // valid character, so what falls between its matches is bytes that are not UTF-8: they
  // become pieces of their own, which keeps encoding lossless.
  auto split = [&](size_t begin, size_t end) {
    regex_->for_each_piece(regex_->split, text + begin, end - begin,
                           [&](size_t b, size_t e, bool) { encode_piece(text + begin + b, e - b, ids); });
  };
  if (!split_digits_) {
    split(0, n);
    return;
  }
  regex_->for_each_piece(regex_->digits, text, n, [&](size_t b, size_t e, bool is_digit) {
    if (is_digit)
      encode_piece(text + b, e - b, ids);
    else
      split(b, e);
  });
}

void Tokenizer::encode_piece(const char* piece, size_t n, std::vector<int32_t>& ids) const {
  std::string key(piece, n);
  auto it = cache_.find(key);
  if (it == cache_.end()) {
    CachedPiece fresh;
    bpe(piece, n, fresh.ids);
    for (size_t i = 0; i < n; i++) fresh.dropped_bytes += byte_token_[(unsigned char)piece[i]] < 0;
    if (cache_.size() >= kMaxCachedPieces) cache_.clear();
    it = cache_.emplace(std::move(key), std::move(fresh)).first;
  }
  ids.insert(ids.end(), it->second.ids.begin(), it->second.ids.end());
  dropped_bytes_ += it->second.dropped_bytes;
}

// HF tokenizers' Word::merge_all: a heap of candidate pairs ordered by (rank, left position);
// a popped pair is applied only if both symbols still exist and still form that merge.
void Tokenizer::bpe(const char* piece, size_t n, std::vector<int32_t>& out) const {
  if (vocab_.ignore_merges) {
    const int id = token_id(byte_level_string(std::string(piece, n)));
    if (id >= 0 && !special_[id]) {
      out.push_back(id);
      return;
    }
  }
  struct Symbol {
    int id, prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(n);
  for (size_t i = 0; i < n; i++) {
    const int id = byte_token_[(unsigned char)piece[i]];
    if (id < 0) continue;  // a byte the vocabulary lacks: dropped, as HF BPE without unk does
    const int pos = (int)symbols.size();
    if (pos > 0) symbols.back().next = pos;
    symbols.push_back({id, pos - 1, -1, true});
  }
  n = symbols.size();
  struct Candidate {
    int rank, pos, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int left) {
    if (left < 0 || symbols[left].next < 0) return;
    const auto it = merge_of_pair_.find(pair_key(symbols[left].id, symbols[symbols[left].next].id));
    if (it != merge_of_pair_.end()) heap.push({it->second.first, left, it->second.second});
  };
  for (int i = 0; i + 1 < (int)n; i++) consider(i);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const auto it = merge_of_pair_.find(pair_key(left.id, right.id));
    if (it == merge_of_pair_.end() || it->second.second != top.merged) continue;  // stale candidate
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int i = n ? 0 : -1; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += token_bytes(id);
  // SentencePiece: the dummy prefix comes back as a leading space, which decoding drops (as
  // sentencepiece and HF's Strip decoder do).
  if (spm_ && vocab_.space_prefix != SpacePrefix::kNone && !text.empty() && text[0] == ' ' && !is_special(ids[0]))
    text.erase(0, 1);
  return text;
}

namespace {

// A real tokenizer.json nests 5 levels deep; deeper input is refused while it is parsed, because
// copying or printing a value (an error message quotes it) recurses once per level, and a file
// of "[[[[..." would run that past the end of the stack.
constexpr int kMaxJsonDepth = 64;

std::string describe(const nlohmann::json& j) { return j.is_null() ? "null" : j.dump().substr(0, 200); }

// obj[key] when obj is an object that has it (null counts as absent), else the fallback; a value
// of another type is refused naming where it is (json::value() would throw nlohmann's own
// exception, not an owlore::Error).
std::string string_field(const std::string& path, const nlohmann::json& obj, const std::string& where,
                         const char* key, const std::string& fallback) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
  const auto& v = obj[key];
  OWLORE_REQUIRE(v.is_string(), path, ": ", where, ".", key, " is ", describe(v), ", expected a string");
  return v.get<std::string>();
}

bool bool_field(const std::string& path, const nlohmann::json& obj, const std::string& where, const char* key,
                bool fallback) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
  const auto& v = obj[key];
  OWLORE_REQUIRE(v.is_boolean(), path, ": ", where, ".", key, " is ", describe(v), ", expected true or false");
  return v.get<bool>();
}

// "gpt2" or "smollm" from a tokenizer.json pre_tokenizer; anything else would tokenize
// differently from HF, so it is refused with what was found.
std::string pre_tokenizer_name(const std::string& path, const nlohmann::json& pre) {
  auto check_byte_level = [&](const nlohmann::json& bl, const std::string& where) {
    OWLORE_REQUIRE(bool_field(path, bl, where, "use_regex", true), path,
                   ": pre_tokenizer ByteLevel with use_regex=false is not supported");
    OWLORE_REQUIRE(!bool_field(path, bl, where, "add_prefix_space", false), path,
                   ": pre_tokenizer ByteLevel with add_prefix_space=true is not supported");
  };
  const std::string type = string_field(path, pre, "pre_tokenizer", "type", "");
  if (type == "ByteLevel") {
    check_byte_level(pre, "pre_tokenizer");
    return "gpt2";
  }
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
      pre["pretokenizers"].size() == 2) {
    const auto& digits = pre["pretokenizers"][0];
    const auto& byte_level = pre["pretokenizers"][1];
    const std::string digits_at = "pre_tokenizer.pretokenizers[0]", byte_level_at = "pre_tokenizer.pretokenizers[1]";
    if (string_field(path, digits, digits_at, "type", "") == "Digits" &&
        bool_field(path, digits, digits_at, "individual_digits", false) &&
        string_field(path, byte_level, byte_level_at, "type", "") == "ByteLevel") {
      check_byte_level(byte_level, byte_level_at);
      return "smollm";
    }
  }
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
      pre["pretokenizers"].size() == 2) {
    // LLaMA-3: the split regex isolates the pieces, then ByteLevel only maps bytes to symbols.
    const auto& split = pre["pretokenizers"][0];
    const auto& byte_level = pre["pretokenizers"][1];
    const std::string split_at = "pre_tokenizer.pretokenizers[0]", byte_level_at = "pre_tokenizer.pretokenizers[1]";
    if (string_field(path, split, split_at, "type", "") == "Split" && split.contains("pattern") &&
        split["pattern"].is_object() &&
        string_field(path, split["pattern"], split_at + ".pattern", "Regex", "") == kLlama3SplitPattern &&
        string_field(path, byte_level, byte_level_at, "type", "") == "ByteLevel") {
      OWLORE_REQUIRE(string_field(path, split, split_at, "behavior", "") == "Isolated" &&
                         !bool_field(path, split, split_at, "invert", false),
                     path, ": ", split_at, " must be behavior Isolated, invert false, got ", describe(split));
      OWLORE_REQUIRE(!bool_field(path, byte_level, byte_level_at, "use_regex", true) &&
                         !bool_field(path, byte_level, byte_level_at, "add_prefix_space", false),
                     path, ": ", byte_level_at, " after the LLaMA-3 Split must have use_regex=false and "
                     "add_prefix_space=false, got ", describe(byte_level));
      return "llama-bpe";
    }
  }
  fail(path, ": unsupported pre_tokenizer ", describe(pre),
       " (supported: ByteLevel, Sequence[Digits(individual_digits=true), ByteLevel], or "
       "Sequence[Split(LLaMA-3 regex, Isolated), ByteLevel(use_regex=false)])");
}

// tokenizer_config.json writes special tokens as "<s>" or {"content": "<s>", ...}.
std::string config_token(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

BpeVocab parse_tokenizer_json(const std::string& text, const std::string& path) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      OWLORE_REQUIRE(depth <= kMaxJsonDepth, path, ": JSON nested deeper than ", kMaxJsonDepth,
                     " levels, not a tokenizer.json");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  OWLORE_REQUIRE(root.is_object() && root.contains("model") && root["model"].is_object(), path,
                 ": expected a tokenizer.json object with a \"model\" object");
  const auto& model = root["model"];
  const std::string model_type = string_field(path, model, "model", "type", "BPE");
  OWLORE_REQUIRE(model_type == "BPE", path, ": model.type is \"", model_type, "\", expected \"BPE\"");
  OWLORE_REQUIRE(!root.contains("normalizer") || root["normalizer"].is_null(), path, ": normalizer ",
                 describe(root["normalizer"]), " is not supported (expected null)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    OWLORE_REQUIRE(!model.contains(key) || model[key].is_null() || model[key] == "", path, ": model.", key, " ",
                   describe(model[key]), " is not supported");
  OWLORE_REQUIRE(!model.contains("dropout") || model["dropout"].is_null() || model["dropout"] == 0, path,
                 ": model.dropout must be null for deterministic tokenization");
  OWLORE_REQUIRE(model.contains("vocab") && model["vocab"].is_object(), path, ": model.vocab must be an object");
  OWLORE_REQUIRE(model.contains("merges") && model["merges"].is_array(), path, ": model.merges must be an array");

  BpeVocab vocab;
  vocab.pre = pre_tokenizer_name(path, root.contains("pre_tokenizer") ? root["pre_tokenizer"] : nullptr);
  vocab.ignore_merges = bool_field(path, model, "model", "ignore_merges", false);

  // Ids are dense 0..n-1 over vocab and added_tokens together (added tokens may extend the vocab).
  std::vector<std::pair<int64_t, std::string>> entries;
  for (const auto& [token, id] : model["vocab"].items()) {
    OWLORE_REQUIRE(id.is_number_integer() && id.get<int64_t>() >= 0, path, ": model.vocab[\"", token,
                   "\"] is ", describe(id), ", expected a non-negative integer id");
    entries.emplace_back(id.get<int64_t>(), token);
  }
  const nlohmann::json added = root.contains("added_tokens") ? root["added_tokens"] : nlohmann::json::array();
  OWLORE_REQUIRE(added.is_array(), path, ": added_tokens must be an array");
  int64_t max_id = -1;
  for (const auto& [id, token] : entries) max_id = std::max(max_id, id);
  for (size_t i = 0; i < added.size(); i++) {
    const auto& t = added[i];
    OWLORE_REQUIRE(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() >= 0 &&
                       t.contains("content") && t["content"].is_string(),
                   path, ": added_tokens[", i, "] needs an integer \"id\" and a string \"content\", got ", describe(t));
    max_id = std::max(max_id, t["id"].get<int64_t>());
  }
  OWLORE_REQUIRE(max_id >= 0 && max_id < (1 << 30), path, ": vocabulary ids run to ", max_id);
  vocab.tokens.assign(max_id + 1, std::string());
  std::vector<uint8_t> present(max_id + 1, 0);
  for (const auto& [id, token] : entries) {
    OWLORE_REQUIRE(!present[id], path, ": model.vocab gives id ", id, " to both \"", vocab.tokens[id], "\" and \"",
                   token, "\"");
    vocab.tokens[id] = token;
    present[id] = 1;
  }
  vocab.token_types.assign(max_id + 1, kTokenNormal);
  for (size_t i = 0; i < added.size(); i++) {
    const int64_t id = added[i]["id"].get<int64_t>();
    const std::string content = added[i]["content"].get<std::string>();
    // These change how HF matches the token in text; owlore matches the exact content only.
    const std::string at = "added_tokens[" + std::to_string(i) + "]";
    for (const char* flag : {"lstrip", "rstrip", "single_word"})
      OWLORE_REQUIRE(!bool_field(path, added[i], at, flag, false), path, ": ", at, " \"", content, "\" has ", flag,
                     "=true, which is not supported");
    OWLORE_REQUIRE(!present[id] || vocab.tokens[id] == content, path, ": added_tokens[", i, "] \"", content,
                   "\" has id ", id, ", which model.vocab gives to \"", vocab.tokens[id], "\"");
    vocab.tokens[id] = content;
    present[id] = 1;
    vocab.token_types[id] = bool_field(path, added[i], at, "special", false) ? kTokenControl : kTokenUserDefined;
  }
  for (int64_t id = 0; id <= max_id; id++)
    OWLORE_REQUIRE(present[id], path, ": no token has id ", id, " (ids must be dense 0..", max_id, ")");

  const auto& merges = model["merges"];
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); i++) {
    const auto& m = merges[i];
    if (m.is_string()) {
      vocab.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      // The [a, b] form exists so that tokens may contain spaces; byte-level tokens never do,
      // and the "a b" form BpeVocab shares with GGUF could not represent them.
      const std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
      OWLORE_REQUIRE(a.find(' ') == std::string::npos && b.find(' ') == std::string::npos, path, ": model.merges[",
                     i, "] ", describe(m), " has a token with a space: not a byte-level BPE");
      vocab.merges.push_back(a + " " + b);
    } else {
      fail(path, ": model.merges[", i, "] is ", describe(m), ", expected \"a b\" or [\"a\", \"b\"]");
    }
  }
  return vocab;
}

BpeVocab load_tokenizer_json(const std::string& path) {
  BpeVocab vocab = parse_tokenizer_json(read_regular_file(path, "tokenizer file"), path);

  // bos/eos/pad live in tokenizer_config.json beside tokenizer.json in a Hugging Face snapshot.
  const size_t slash = path.find_last_of('/');
  const std::string config_path = (slash == std::string::npos ? "" : path.substr(0, slash + 1)) + "tokenizer_config.json";
  std::error_code missing;
  if (std::filesystem::exists(config_path, missing)) {
    const std::string config_text = read_regular_file(config_path, "tokenizer_config.json");
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(config_text);
    } catch (const nlohmann::json::exception& e) {
      fail(config_path, ": not valid JSON (", e.what(), ")");
    }
    auto find = [&](const char* key) {
      const std::string token = config_token(config, key);
      if (token.empty()) return -1;
      const auto it = std::find(vocab.tokens.begin(), vocab.tokens.end(), token);
      OWLORE_REQUIRE(it != vocab.tokens.end(), config_path, ": ", key, " \"", token, "\" is not in ", path);
      return (int)(it - vocab.tokens.begin());
    };
    vocab.bos = find("bos_token");
    vocab.eos = find("eos_token");
    vocab.pad = find("pad_token");
  }
  return vocab;
}

}  // namespace owlore
