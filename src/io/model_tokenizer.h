// The tokenizer that comes with a model: a GGUF file's tokenizer.ggml.* metadata, or the
// tokenizer.json beside a Hugging Face checkpoint, else a tiktoken tokenizer.model there (Meta's
// LLaMA-3 form, io/tiktoken.h). One place, so train/eval/generate agree.
#pragma once
#include <memory>
#include <string>

#include "io/chat_template.h"
#include "io/token_data.h"
#include "io/tokenizer.h"

namespace owlore {

class GgufFile;

BpeVocab gguf_bpe_vocab(const GgufFile& gguf);
// nullptr when the model has no tokenizer (a preset, or a checkpoint without tokenizer.json or
// a tiktoken tokenizer.model).
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path);

// The model's chat template (Jinja text): a checkpoint's chat_template.jinja or
// tokenizer_config.json "chat_template", a GGUF's tokenizer.chat_template; empty when it has none
// (a preset, no such file or key). `source` says where it was read, for errors.
std::string load_model_chat_template(const std::string& model_path, std::string& source);
// --chat-template resolved: `choice` unless auto, else the family of the model's own template.
// When auto finds none, or one detect_chat_template does not know, this returns kAuto and `why`
// says so: only chat data needs a template, so the error waits for it (InstructOptions).
ChatTemplate resolve_chat_template(ChatTemplate choice, const std::string& model_path, std::string& why);

// The InstructOptions of a command: the template resolved for the model at `model_path`
// (resolve_chat_template), and, when `tokenizer` is null, why text cannot be byte ids
// (byte_level_refusal for `vocab`, `hint` saying what to pass).
InstructOptions chat_data_options(const std::string& model_path, ChatTemplate chat_template, TrainOn train_on,
                                  const std::string& system, bool skip_bad_lines, const Tokenizer* tokenizer,
                                  int vocab, const std::string& model_name, const std::string& hint);

}  // namespace owlore
