// SentencePiece BPE with byte fallback (LLaMA-2, TinyLlama, Mistral v0.1-v0.3): the "llama"
// tokenizer model of GGUF, read from a SentencePiece tokenizer.model, a Hugging Face
// tokenizer.json (BPE byte_fallback with the Metaspace pre-tokenizer or the Prepend+Replace
// normalizer) or GGUF metadata. Tokenizer (io/tokenizer.h) owns one and dispatches to it; special
// tokens are split out of the text there, as for byte-level BPE.
//
// encode(text between specials), as sentencepiece's identity normalizer and BPE model do:
//   1. every ' ' becomes "\u2581" and, when the vocabulary asks for it, "\u2581" is put in front
//      (the dummy prefix); bytes that are not UTF-8 become U+FFFD, as sentencepiece's normalizer;
//   2. the text splits into UTF-8 characters, and the adjacent pair with the best priority merges
//      first, ties leftmost: the highest score of the merged token (tokenizer.model, GGUF), or the
//      lowest merge rank (tokenizer.json merges, as HF's BPE applies them);
//   3. a merged token of type unused splits back into the two it came from, and a symbol that
//      is no token becomes its bytes' "<0xNN>" tokens (byte fallback) or, without those, unk.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace owlore {

// A SentencePiece ModelProto (tokenizer.model) as a "llama" vocabulary: pieces with scores and
// types, unk/bos/eos/pad from trainer_spec, add_dummy_prefix from normalizer_spec. Refuses, naming
// the file and the field, what this tokenizer would not reproduce (a model type other than BPE,
// a normalization rule, remove_extra_whitespaces, whitespace as suffix).
BpeVocab parse_sentencepiece_model(const std::string& bytes, const std::string& path);
BpeVocab load_sentencepiece_model(const std::string& path);

class SentencePieceBpe {
 public:
  // `vocab` has been checked for size and types (Tokenizer's constructor). Not copyable or
  // movable: piece_ids_ views its own tokens_.
  explicit SentencePieceBpe(const BpeVocab& vocab);
  SentencePieceBpe(const SentencePieceBpe&) = delete;
  SentencePieceBpe& operator=(const SentencePieceBpe&) = delete;
  // Appends the ids of text[0, n), which holds no special token, and (when spans is not null)
  // each token's place in the text, offset by `base`. `prefix`: put the dummy "\u2581" in front.
  void encode(const char* text, size_t n, bool prefix, std::vector<int32_t>& ids,
              std::vector<Tokenizer::Span>* spans, uint32_t base) const;
  // The text a non-special token stands for: "\u2581" -> ' ', "<0xNN>" -> the byte.
  std::string token_text(int id) const;
  int byte_token(unsigned char b) const { return byte_token_[b]; }

 private:
  std::vector<std::string> tokens_;
  std::vector<int> types_;
  int unk_;
  std::unordered_map<std::string_view, int> piece_ids_;  // views into tokens_
  // (left << 32 | right) -> (priority, merged id): lower priority merges first
  std::unordered_map<uint64_t, std::pair<double, int>> merges_;
  int byte_token_[256];
};

}  // namespace owlore
