// Byte-level BPE tokenizer (GPT-2 style), bit-identical to Hugging Face `tokenizers` for the
// vocabularies owlore trains (SmolLM2, GPT-2): tests/test_tokenizer.cpp checks it against ids
// that tools/ref/make_tokenizer_golden.py produced with HF tokenizers.
//
// encode(text):
//   1. special tokens (GGUF token type 3 = control or 4 = user-defined; HF added_tokens) are
//      found first, leftmost-longest, and never split;
//   2. the text between them is pre-tokenized with PCRE2 (UTF-8, Unicode properties): the
//      GPT-2 regex, preceded for SmolLM2 ("smollm") by isolating every \p{N} character, as HF's
//      Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)] does; LLaMA-3
//      ("llama-bpe") uses its own split regex instead, as tiktoken and HF's Split(Isolated) do;
//   3. each piece's bytes map to the 256 byte-level symbols, and merges apply lowest rank
//      first (ties: leftmost), as HF's BPE word merge does.
// Bytes that are not valid UTF-8 cannot match the regex; each such run becomes its own piece.
// A byte whose symbol the vocabulary lacks is dropped, as HF does (SmolLM2 lacks 21 bytes, e.g.
// 0x04, 0xF5..0xFF); dropped_bytes() counts them so loaders can report it. Otherwise encode is
// lossless: decode(encode(x)) == x.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/choices.h"

namespace owlore {

class SentencePieceBpe;

// GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum TokenType : int { kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4,
                       kTokenUnused = 5, kTokenByte = 6 };

// GGUF's tokenizer.ggml.model: byte-level BPE ("gpt2", this file) or SentencePiece BPE with
// byte fallback ("llama", io/sentencepiece.h).
enum class TokenizerModel { kGpt2, kLlama };
extern const ChoiceTable<TokenizerModel, 2> kTokenizerModels;
// Where a SentencePiece vocabulary puts its dummy "\u2581" prefix: nowhere; before the text when
// it starts with ordinary text (sentencepiece, whose text never holds specials); before every
// stretch of ordinary text between specials (HF's Prepend normalizer, Metaspace "always").
enum class SpacePrefix { kNone, kFirst, kAlways };

// A vocabulary as GGUF metadata stores it (tokenizer.ggml.*); the GGUF reader fills this, and
// load_tokenizer_json builds it from a Hugging Face tokenizer.json.
struct BpeVocab {
  std::vector<std::string> tokens;  // byte-level strings ("Ġthe"), specials as written ("<|im_end|>")
  std::vector<std::string> merges;  // "a b", rank = index
  std::vector<int> token_types;     // TokenType per token; empty = all normal
  int bos = -1, eos = -1, pad = -1;
  std::string pre;  // pre-tokenizer name, as GGUF tokenizer.ggml.pre: "gpt2", "smollm" or "llama-bpe"
  bool ignore_merges = false;  // HF BPE option: a piece that is itself a token skips the merges
  TokenizerModel model = TokenizerModel::kGpt2;
  // "llama" only: tokens are SentencePiece pieces ("\u2581the", "<0x0A>"); scores (GGUF
  // tokenizer.ggml.scores) rank merges when present, else `merges` do (a tokenizer.json's).
  std::vector<float> scores;
  int unk = -1;
  SpacePrefix space_prefix = SpacePrefix::kFirst;
};

class Tokenizer {
 public:
  // Throws owlore::Error if the vocabulary is not a usable byte-level BPE (a byte symbol or a
  // merge result missing from tokens, an unknown pre-tokenizer, mismatched token_types).
  explicit Tokenizer(BpeVocab vocab);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // parse_special=false treats special-token text ("<|im_end|>") as ordinary text.
  // Not thread-safe: encode fills a per-tokenizer cache of pieces (use one Tokenizer per thread).
  std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const;
  // Appends instead of returning, for building long streams without copies.
  void encode_append(const std::string& text, std::vector<int32_t>& ids, bool parse_special = true) const;
  // Each token's place in `text`: token i came from text[spans[i].begin, spans[i].end). Spans
  // are in order and never overlap; bytes encode drops lie between spans; a token that stands
  // for no byte of the text (SentencePiece's dummy-prefix "\u2581") has begin == end. Loss masks
  // use this to find the tokens of each chat turn in a conversation tokenized whole.
  struct Span {
    uint32_t begin = 0, end = 0;
  };
  std::vector<int32_t> encode_with_spans(const std::string& text, std::vector<Span>& spans,
                                         bool parse_special = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  int size() const { return (int)vocab_.tokens.size(); }
  // Id of a token written as in the vocabulary ("Ġthe", "<|im_end|>"), or -1.
  int token_id(const std::string& token) const;
  // Same, but throws naming the token when the vocabulary lacks it.
  int require_token(const std::string& token) const;
  // The text bytes a token stands for (what decode emits for it).
  const std::string& token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  // Bytes encode has dropped so far because the vocabulary has no symbol for them.
  int64_t dropped_bytes() const { return dropped_bytes_; }
  // Whether the vocabulary has a symbol for this byte (those it lacks are dropped by encode).
  bool has_byte(unsigned char byte) const { return byte_token_[byte] >= 0; }
  const BpeVocab& vocab() const { return vocab_; }

 private:
  struct Regexes;  // compiled PCRE2 patterns and match data (owned)
  void encode_ordinary(const char* text, size_t n, std::vector<int32_t>& ids) const;
  void encode_piece(const char* piece, size_t n, std::vector<int32_t>& ids) const;
  void bpe(const char* piece, size_t n, std::vector<int32_t>& out) const;

  BpeVocab vocab_;
  std::unordered_map<std::string, int> token_ids_;
  std::vector<std::string> token_bytes_;
  std::vector<uint8_t> special_;
  int byte_token_[256];
  std::unordered_map<uint64_t, std::pair<int, int>> merge_of_pair_;  // (left<<32|right) -> (rank, merged id)
  std::vector<std::vector<int>> specials_by_first_byte_;           // 256 lists, longest first
  bool split_digits_ = false;
  std::unique_ptr<Regexes> regex_;
  std::unique_ptr<SentencePieceBpe> spm_;  // "llama" vocabularies
  void init_sentencepiece();
  void encode_sentencepiece(const std::string& text, std::vector<int32_t>& ids, std::vector<Span>* spans,
                            bool parse_special) const;
  struct CachedPiece {
    std::vector<int32_t> ids;
    int dropped_bytes = 0;
  };
  mutable std::unordered_map<std::string, CachedPiece> cache_;
  mutable int64_t dropped_bytes_ = 0;
};

// LLaMA-3's split regex ("llama-bpe"): tiktoken's pat_str in Meta's llama_models/llama3/
// tokenizer.py, and the Split pattern of Meta-Llama-3's tokenizer.json. Letters keep one leading
// non-letter, numbers split in runs of up to three digits, newlines stay with punctuation.
extern const char* const kLlama3SplitPattern;

// Raw bytes as GPT-2 byte-level symbols (0x20 -> "Ġ"), the form vocabularies write tokens in.
std::string byte_level_string(const std::string& bytes);

// Reads a Hugging Face tokenizer.json: model.vocab, model.merges ("a b" strings or [a, b]
// arrays), added_tokens (special=true -> control, else user-defined), pre_tokenizer (ByteLevel
// alone -> "gpt2"; Sequence[Digits(individual_digits=true), ByteLevel] -> "smollm";
// Sequence[Split(LLaMA-3 regex, Isolated), ByteLevel(use_regex=false)] -> "llama-bpe"). bos/eos/pad
// come from a tokenizer_config.json in the same folder when there is one. Errors name the file
// and the key.
BpeVocab load_tokenizer_json(const std::string& path);
// The same from tokenizer.json text already in memory (`path` names it in errors), without the
// tokenizer_config.json lookup.
BpeVocab parse_tokenizer_json(const std::string& text, const std::string& path);

}  // namespace owlore
