#include "io/sentencepiece.h"

#include <cstring>
#include <functional>
#include <queue>

#include "base/error.h"
#include "io/files.h"

namespace owlore {

namespace {

// The protobuf wire format, as far as ModelProto needs it: varints, 32-bit floats,
// length-delimited strings and sub-messages; other fields are skipped by their wire type.
struct Wire {
  const std::string& path;
  const char* p;
  const char* end;
  std::string where;  // the message being read, for errors

  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      OWLORE_REQUIRE(p < end, path, ": ", where, ": truncated varint, not a SentencePiece model");
      const unsigned char c = (unsigned char)*p++;
      v |= (uint64_t)(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
    fail(path, ": ", where, ": varint longer than 10 bytes, not a SentencePiece model");
  }
  // The next field's number and wire type.
  std::pair<uint32_t, int> tag() {
    const uint64_t t = varint();
    return {(uint32_t)(t >> 3), (int)(t & 7)};
  }
  std::string_view bytes(const char* field) {
    const uint64_t n = varint();
    OWLORE_REQUIRE(n <= (uint64_t)(end - p), path, ": ", where, ".", field, ": ", n,
                   " bytes run past the end, not a SentencePiece model");
    std::string_view out(p, n);
    p += n;
    return out;
  }
  float fixed32_float(const char* field) {
    OWLORE_REQUIRE(end - p >= 4, path, ": ", where, ".", field, ": truncated float");
    float f;
    std::memcpy(&f, p, 4);  // little-endian, as every platform owlore builds for
    p += 4;
    return f;
  }
  void expect(int type, int want, const char* field) {
    OWLORE_REQUIRE(type == want, path, ": ", where, ".", field, " has wire type ", type, ", expected ", want);
  }
  void skip(int type, uint32_t field) {
    switch (type) {
      case 0: varint(); return;
      case 1: OWLORE_REQUIRE(end - p >= 8, path, ": ", where, ": truncated field ", field); p += 8; return;
      case 2: bytes("?"); return;
      case 5: OWLORE_REQUIRE(end - p >= 4, path, ": ", where, ": truncated field ", field); p += 4; return;
      default: fail(path, ": ", where, ": field ", field, " has wire type ", type, ", not a SentencePiece model");
    }
  }
  Wire sub(std::string_view bytes, std::string name) const { return Wire{path, bytes.data(), bytes.data() + bytes.size(), std::move(name)}; }
};

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol
constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 character at s (0 when it is not one).
size_t utf8_length(const char* s, size_t n) {
  const unsigned char c = (unsigned char)s[0];
  if (c < 0x80) return 1;
  size_t len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n) return 0;
  uint32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t i = 1; i < len; i++) {
    if (((unsigned char)s[i] >> 6) != 2) return 0;
    cp = (cp << 6) | ((unsigned char)s[i] & 0x3F);
  }
  const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

uint64_t pair_key(int left, int right) { return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right; }

std::string byte_piece(int b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

}  // namespace

BpeVocab parse_sentencepiece_model(const std::string& bytes, const std::string& path) {
  BpeVocab v;
  v.model = TokenizerModel::kLlama;
  int model_type = 1, unk = 0, bos = 1, eos = 2, pad = -1;  // trainer_spec defaults
  bool byte_fallback = false, whitespace_suffix = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
  std::string normalizer = "", charsmap;
  Wire model{path, bytes.data(), bytes.data() + bytes.size(), "ModelProto"};
  while (!model.done()) {
    const auto [field, type] = model.tag();
    if (field == 1) {
      model.expect(type, 2, "pieces");
      Wire piece = model.sub(model.bytes("pieces"), "ModelProto.pieces[" + std::to_string(v.tokens.size()) + "]");
      std::string text;
      float score = 0;
      int kind = kTokenNormal;
      while (!piece.done()) {
        const auto [f, t] = piece.tag();
        if (f == 1) {
          piece.expect(t, 2, "piece");
          text = std::string(piece.bytes("piece"));
        } else if (f == 2) {
          piece.expect(t, 5, "score");
          score = piece.fixed32_float("score");
        } else if (f == 3) {
          piece.expect(t, 0, "type");
          kind = (int)piece.varint();
          OWLORE_REQUIRE(kind >= kTokenNormal && kind <= kTokenByte, path, ": ", piece.where, ".type is ", kind,
                         ", expected 1..6");
        } else {
          piece.skip(t, f);
        }
      }
      v.tokens.push_back(std::move(text));
      v.scores.push_back(score);
      v.token_types.push_back(kind);
    } else if (field == 2) {
      model.expect(type, 2, "trainer_spec");
      Wire spec = model.sub(model.bytes("trainer_spec"), "ModelProto.trainer_spec");
      while (!spec.done()) {
        const auto [f, t] = spec.tag();
        auto int_field = [&](const char* name) {
          spec.expect(t, 0, name);
          return (int)(int32_t)spec.varint();
        };
        if (f == 3) model_type = int_field("model_type");
        else if (f == 24) whitespace_suffix = int_field("treat_whitespace_as_suffix") != 0;
        else if (f == 35) byte_fallback = int_field("byte_fallback") != 0;
        else if (f == 40) unk = int_field("unk_id");
        else if (f == 41) bos = int_field("bos_id");
        else if (f == 42) eos = int_field("eos_id");
        else if (f == 43) pad = int_field("pad_id");
        else spec.skip(t, f);
      }
    } else if (field == 3) {
      model.expect(type, 2, "normalizer_spec");
      Wire spec = model.sub(model.bytes("normalizer_spec"), "ModelProto.normalizer_spec");
      while (!spec.done()) {
        const auto [f, t] = spec.tag();
        auto bool_field = [&](const char* name) {
          spec.expect(t, 0, name);
          return spec.varint() != 0;
        };
        if (f == 1) { spec.expect(t, 2, "name"); normalizer = std::string(spec.bytes("name")); }
        else if (f == 2) { spec.expect(t, 2, "precompiled_charsmap"); charsmap = std::string(spec.bytes("precompiled_charsmap")); }
        else if (f == 3) add_dummy_prefix = bool_field("add_dummy_prefix");
        else if (f == 4) remove_extra_whitespaces = bool_field("remove_extra_whitespaces");
        else if (f == 5) escape_whitespaces = bool_field("escape_whitespaces");
        else spec.skip(t, f);
      }
    } else {
      model.skip(type, field);
    }
  }
  OWLORE_REQUIRE(!v.tokens.empty(), path, ": ModelProto.pieces is empty, not a SentencePiece model");
  OWLORE_REQUIRE(model_type == 2, path, ": trainer_spec.model_type is ", model_type,
                 ", only BPE (2) is supported (1 = unigram)");
  OWLORE_REQUIRE(charsmap.empty() && (normalizer.empty() || normalizer == "identity"), path,
                 ": normalizer_spec.name is \"", normalizer, "\", only \"identity\" (no normalization) is supported");
  OWLORE_REQUIRE(!remove_extra_whitespaces, path, ": normalizer_spec.remove_extra_whitespaces=true is not supported");
  OWLORE_REQUIRE(escape_whitespaces, path, ": normalizer_spec.escape_whitespaces=false is not supported");
  OWLORE_REQUIRE(!whitespace_suffix, path, ": trainer_spec.treat_whitespace_as_suffix=true is not supported");
  const int n = (int)v.tokens.size();
  for (const auto& [name, id] : {std::pair<const char*, int>{"unk_id", unk}, {"bos_id", bos}, {"eos_id", eos}, {"pad_id", pad}})
    OWLORE_REQUIRE(id >= -1 && id < n, path, ": trainer_spec.", name, " is ", id, ", outside the ", n, " pieces");
  // Without byte_fallback the model has no byte pieces, and SentencePieceBpe falls back to unk.
  (void)byte_fallback;
  v.unk = unk;
  v.bos = bos;
  v.eos = eos;
  v.pad = pad;
  v.space_prefix = add_dummy_prefix ? SpacePrefix::kFirst : SpacePrefix::kNone;
  return v;
}

BpeVocab load_sentencepiece_model(const std::string& path) {
  return parse_sentencepiece_model(read_regular_file(path, "SentencePiece model"), path);
}

SentencePieceBpe::SentencePieceBpe(const BpeVocab& vocab)
    : tokens_(vocab.tokens), types_(vocab.token_types), unk_(vocab.unk) {
  const int n = (int)tokens_.size();
  piece_ids_.reserve(n);
  for (int id = 0; id < n; id++) piece_ids_.emplace(std::string_view(tokens_[id]), id);  // first wins
  for (int b = 0; b < 256; b++) {
    const auto it = piece_ids_.find(byte_piece(b));
    byte_token_[b] = it != piece_ids_.end() && vocab.token_types[it->second] == kTokenByte ? it->second : -1;
  }
  auto id_of = [&](std::string_view s) {
    const auto it = piece_ids_.find(s);
    return it == piece_ids_.end() ? -1 : it->second;
  };
  if (!vocab.scores.empty()) {
    OWLORE_REQUIRE(vocab.scores.size() == (size_t)n, "tokenizer: ", vocab.scores.size(), " scores for ", n, " tokens");
    // Every way to build a mergeable token from two tokens, as sentencepiece looks the merged
    // piece up among normal, user-defined and unused pieces.
    for (int id = 0; id < n; id++) {
      const int type = vocab.token_types[id];
      if (type != kTokenNormal && type != kTokenUserDefined && type != kTokenUnused) continue;
      if (id_of(vocab.tokens[id]) != id) continue;  // a duplicate: sentencepiece keeps the first
      const std::string_view piece(vocab.tokens[id]);
      for (size_t k = 1; k < piece.size(); k++) {
        if (((unsigned char)piece[k] >> 6) == 2) continue;  // inside a character
        const int left = id_of(piece.substr(0, k)), right = id_of(piece.substr(k));
        if (left >= 0 && right >= 0) merges_.emplace(pair_key(left, right), std::make_pair(-(double)vocab.scores[id], id));
      }
    }
  } else {
    for (size_t rank = 0; rank < vocab.merges.size(); rank++) {
      const std::string& merge = vocab.merges[rank];
      const size_t space = merge.find(' ');
      OWLORE_REQUIRE(space != std::string::npos && space > 0 && space + 1 < merge.size(), "tokenizer: merge #", rank,
                     " \"", merge, "\" is not two tokens separated by one space");
      const std::string_view m(merge);
      const int left = id_of(m.substr(0, space)), right = id_of(m.substr(space + 1));
      const int merged = id_of(std::string(m.substr(0, space)) + std::string(m.substr(space + 1)));
      OWLORE_REQUIRE(left >= 0 && right >= 0 && merged >= 0, "tokenizer: merge #", rank, " \"", merge,
                     "\" names a token the vocabulary lacks");
      merges_.emplace(pair_key(left, right), std::make_pair((double)rank, merged));  // lowest rank wins
    }
  }
}

std::string SentencePieceBpe::token_text(int id) const {
  const std::string& piece = tokens_[id];
  if (types_[id] == kTokenByte) {
    for (int b = 0; b < 256; b++)
      if (byte_token_[b] == id) return std::string(1, (char)b);
  }
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, kSpace) == 0) {
      out += ' ';
      i += 3;
    } else {
      out += piece[i++];
    }
  }
  return out;
}

void SentencePieceBpe::encode(const char* text, size_t n, bool prefix, std::vector<int32_t>& ids,
                              std::vector<Tokenizer::Span>* spans, uint32_t base) const {
  if (n == 0) return;
  // The normalized text, and for each of its bytes the text offset it came from (the dummy
  // prefix comes from offset 0 and stands for no byte; "\u2581" for ' ' and U+FFFD for a stray
  // byte stand for one byte each).
  std::string norm;
  std::vector<uint32_t> from;
  norm.reserve(n + n / 4 + 3);
  from.reserve(n + n / 4 + 4);
  struct Symbol {
    uint32_t begin, end;  // in norm
    int id, prev, next, left_child, right_child;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(n + 1);
  auto add_symbol = [&](size_t begin) {
    symbols.push_back({(uint32_t)begin, (uint32_t)norm.size(), -1, (int)symbols.size() - 1, -1, -1, -1});
  };
  if (prefix) {
    norm += kSpace;
    from.insert(from.end(), 3, 0);
    add_symbol(0);
  }
  for (size_t i = 0; i < n;) {
    const size_t begin = norm.size();
    if (text[i] == ' ') {
      norm += kSpace;
      from.insert(from.end(), 3, (uint32_t)i);
      i++;
    } else if (const size_t len = utf8_length(text + i, n - i); len > 0) {
      norm.append(text + i, len);
      for (size_t k = 0; k < len; k++) from.push_back((uint32_t)(i + k));
      i += len;
    } else {
      norm += kReplacement;
      from.insert(from.end(), 3, (uint32_t)i);
      i++;
    }
    add_symbol(begin);
  }
  from.push_back((uint32_t)n);
  auto id_of = [&](uint32_t begin, uint32_t end) {
    const auto it = piece_ids_.find(std::string_view(norm.data() + begin, end - begin));
    return it == piece_ids_.end() ? -1 : it->second;
  };
  for (size_t i = 0; i < symbols.size(); i++) {
    symbols[i].id = id_of(symbols[i].begin, symbols[i].end);
    symbols[i].next = i + 1 < symbols.size() ? (int)i + 1 : -1;
  }

  struct Candidate {
    double priority;
    int left, right, merged;
    bool operator>(const Candidate& o) const { return priority != o.priority ? priority > o.priority : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int left) {
    if (left < 0) return;
    const int right = symbols[left].next;
    if (right < 0 || symbols[left].id < 0 || symbols[right].id < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) heap.push({it->second.first, left, right, it->second.second});
  };
  for (int i = 0; i + 1 < (int)symbols.size(); i++) consider(i);
  // Merged symbols stay in `symbols` (dead, prev = -2) as the children of the one they formed.
  std::vector<Symbol> pieces;  // copies of merged-away symbols, for unused-token resegmentation
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.left];
    if (left.prev == -2 || left.next != top.right) continue;  // stale
    Symbol& right = symbols[top.right];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.merged) continue;  // stale
    pieces.push_back(left);
    pieces.push_back(right);
    left.left_child = (int)pieces.size() - 2;
    left.right_child = (int)pieces.size() - 1;
    left.end = right.end;
    left.id = top.merged;
    left.next = right.next;
    right.prev = -2;
    if (left.next >= 0) symbols[left.next].prev = top.left;
    consider(left.prev);
    consider(top.left);
  }

  auto emit = [&](int id, uint32_t begin, uint32_t end) {
    ids.push_back(id);
    if (spans) spans->push_back({base + from[begin], base + from[end]});
  };
  // An unused token splits back into its two parts; a symbol that is no token becomes bytes.
  std::function<void(const Symbol&)> output = [&](const Symbol& s) {
    if (s.id >= 0 && types_[s.id] == kTokenUnused && s.left_child >= 0) {
      output(pieces[s.left_child]);
      output(pieces[s.right_child]);
    } else if (s.id >= 0) {
      emit(s.id, s.begin, s.end);
    } else {
      for (uint32_t b = s.begin; b < s.end; b++) {
        const int byte = byte_token_[(unsigned char)norm[b]];
        if (byte >= 0)
          emit(byte, b, b + 1);
        else if (b == s.begin)  // no byte pieces: the whole symbol is one unk
          emit(unk_ >= 0 ? unk_ : 0, s.begin, s.end);
        if (byte < 0) break;
      }
    }
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) output(symbols[i]);
}

}  // namespace owlore
