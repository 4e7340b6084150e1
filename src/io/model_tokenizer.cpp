#include "io/model_tokenizer.h"

#include <filesystem>

#include "base/error.h"
#include "io/gguf.h"

namespace owlore {

BpeVocab gguf_bpe_vocab(const GgufFile& gguf) {
  const std::string model = gguf.tokenizer_model();
  OWLORE_REQUIRE(model == "gpt2", "tokenizer.ggml.model is '", model, "': only byte-level BPE ('gpt2') is supported");
  BpeVocab v;
  v.tokens = gguf.tokens();
  v.merges = gguf.merges();
  for (int64_t t : gguf.token_types()) v.token_types.push_back((int)t);
  v.bos = (int)gguf.bos_id();
  v.eos = (int)gguf.eos_id();
  v.pad = (int)gguf.padding_id();
  v.pre = gguf.tokenizer_pre();
  return v;
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path) {
  namespace fs = std::filesystem;
  if (model_path.empty()) return nullptr;
  if (fs::path(model_path).extension() == ".gguf") {
    const GgufFile gguf(model_path);
    if (!gguf.has("tokenizer.ggml.tokens")) return nullptr;
    return std::make_unique<Tokenizer>(gguf_bpe_vocab(gguf));
  }
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  const fs::path json = dir / "tokenizer.json";
  if (!fs::exists(json)) return nullptr;
  return std::make_unique<Tokenizer>(load_tokenizer_json(json.string()));
}

}  // namespace owlore
