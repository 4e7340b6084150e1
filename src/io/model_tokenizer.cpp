#include "io/model_tokenizer.h"

#include <filesystem>
#include <limits>

#include "base/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/tiktoken.h"

namespace owlore {

BpeVocab gguf_bpe_vocab(const GgufFile& gguf) {
  const std::string model = gguf.tokenizer_model();
  OWLORE_REQUIRE(model == "gpt2", "tokenizer.ggml.model is '", model, "': only byte-level BPE ('gpt2') is supported");
  BpeVocab v;
  v.tokens = gguf.tokens();
  v.merges = gguf.merges();
  // GGUF stores these as 32- or 64-bit integers; one that does not fit an int is refused here,
  // where a narrowing cast would turn 2^32 + 1 into the valid id 1.
  const std::vector<int64_t> types = gguf.token_types();
  for (size_t i = 0; i < types.size(); i++) {
    OWLORE_REQUIRE(types[i] >= std::numeric_limits<int>::min() && types[i] <= std::numeric_limits<int>::max(),
                   gguf.source(), ": tokenizer.ggml.token_type[", i, "] is ", types[i], ", not a token type");
    v.token_types.push_back((int)types[i]);
  }
  const int64_t n = (int64_t)v.tokens.size();
  auto special = [&](const char* key, int64_t id) {
    OWLORE_REQUIRE(id >= -1 && id < n, gguf.source(), ": tokenizer.ggml.", key, " is ", id,
                   ", outside the vocabulary of ", n, " tokens");
    return (int)id;
  };
  v.bos = special("bos_token_id", gguf.bos_id());
  v.eos = special("eos_token_id", gguf.eos_id());
  v.pad = special("padding_token_id", gguf.padding_id());
  v.pre = gguf.tokenizer_pre();
  // llama.cpp tokenizes LLaMA-3 with ignore_merges, as HF's tokenizer.json for it says: some of
  // its tokens are not reachable by merges, only as a whole piece (as tiktoken finds them).
  v.ignore_merges = v.pre == "llama-bpe";
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
  if (fs::exists(json)) return std::make_unique<Tokenizer>(load_tokenizer_json(json.string()));
  const fs::path model = dir / "tokenizer.model";
  if (fs::exists(model) && looks_like_tiktoken(RegularFile(model.string(), "tokenizer.model").read_prefix(256)))
    return std::make_unique<Tokenizer>(load_tiktoken_model(model.string()));
  return nullptr;
}

}  // namespace owlore
