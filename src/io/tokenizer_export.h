// The tokenizer files a checkpoint directory carries beside its weights, so that owlore
// (io/model_tokenizer.h reads tokenizer.json) and transformers (AutoTokenizer, generate) use the
// directory on its own:
//   tokenizer.json          Hugging Face `tokenizers`: the input's own, copied byte for byte, or a
//                           GGUF's byte-level BPE vocabulary (tokenizer.ggml.*) written as one that
//                           gives the ids owlore's Tokenizer gives (model, pre_tokenizer, added
//                           tokens = GGUF control / user-defined tokens);
//   tokenizer_config.json   chat_template (GGUF tokenizer.chat_template), bos/eos/pad/unk,
//                           model_max_length;
//   special_tokens_map.json bos/eos/pad/unk;
//   generation_config.json  bos, eos (every end-of-turn id, a list when there are several), pad.
// A Hugging Face input directory's own files (and chat_template.jinja, tokenizer.model) are
// copied as they are; the ones it lacks are written from its tokenizer.json and config.json.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "io/tokenizer.h"
#include "model/config.h"

namespace owlore {

// File name -> bytes, in the order they are written. Empty when the input has no tokenizer.
struct TokenizerFiles {
  std::vector<std::pair<std::string, std::string>> files;
  bool empty() const { return files.empty(); }
  const std::string* find(const std::string& name) const;
};

// Every file name a checkpoint's tokenizer may have; a save removes those of an earlier model
// that the new one does not write, so a directory never pairs weights with another tokenizer.
extern const char* const kTokenizerFileNames[6];

// The files for a checkpoint of the model at `model_path` (a .gguf file, a checkpoint directory,
// a .safetensors file or index inside one; empty: a preset, no files). `config` is the loaded
// model's (eos, context length). Throws naming the file when the input's tokenizer cannot be
// exported (a GGUF vocabulary that is not byte-level BPE, a token that appears twice).
TokenizerFiles checkpoint_tokenizer_files(const std::string& model_path, const ModelConfig& config);

// The pieces, for tests and for the files above.
struct TokenizerMetadata {
  std::string chat_template;  // empty: none
  int unk = -1;
  int model_max_length = 0;       // 0: not written
  std::vector<int> end_of_turn;   // eos first, then every other id that ends a turn
};
// tokenizer.json text for a byte-level BPE vocabulary (pre "gpt2", "smollm" or "llama-bpe").
std::string hf_tokenizer_json(const BpeVocab& vocab);
std::string hf_tokenizer_config_json(const BpeVocab& vocab, const TokenizerMetadata& meta);
std::string hf_special_tokens_map_json(const BpeVocab& vocab, const TokenizerMetadata& meta);
std::string hf_generation_config_json(const BpeVocab& vocab, const TokenizerMetadata& meta);
// eos, then the tokens that end a turn in the chat template's own format (<|im_end|>, <|eot_id|>,
// <|eom_id|>, <|end|>, <end_of_turn>, </s>) that the template names and the vocabulary has, then
// `extra` (GGUF eot/eom ids), then for a LLaMA-3 ("llama-bpe") vocabulary <|eom_id|> and
// <|eot_id|> whatever the template says; each once.
std::vector<int> end_of_turn_ids(const BpeVocab& vocab, const std::string& chat_template, const std::vector<int>& extra);

}  // namespace owlore
