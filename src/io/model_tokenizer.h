// The tokenizer that comes with a model: a GGUF file's tokenizer.ggml.* metadata, or the
// tokenizer.json beside a Hugging Face checkpoint, else a tiktoken tokenizer.model there (Meta's
// LLaMA-3 form, io/tiktoken.h). One place, so train/eval/generate agree.
#pragma once
#include <memory>
#include <string>

#include "io/tokenizer.h"

namespace owlore {

class GgufFile;

BpeVocab gguf_bpe_vocab(const GgufFile& gguf);
// nullptr when the model has no tokenizer (a preset, or a checkpoint without tokenizer.json or
// a tiktoken tokenizer.model).
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path);

}  // namespace owlore
