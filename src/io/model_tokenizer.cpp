#include "io/model_tokenizer.h"

#include <filesystem>
#include <limits>

#include "base/error.h"
#include "io/gguf.h"

namespace owlore {

BpeVocab gguf_bpe_vocab(const GgufFile& gguf) {
  BpeVocab v;
  v.model = parse_choice(kTokenizerModels, gguf.tokenizer_model(), gguf.source() + ": tokenizer.ggml.model");
  v.tokens = gguf.tokens();
  if (v.model == TokenizerModel::kLlama) {
    // SentencePiece: the scores rank the merges; llama.cpp's add_space_prefix defaults to true.
    OWLORE_REQUIRE(gguf.has("tokenizer.ggml.scores"), gguf.source(), ": tokenizer.ggml.model 'llama' needs tokenizer.ggml.scores");
    for (double s : gguf.get_float_array("tokenizer.ggml.scores")) v.scores.push_back((float)s);
    OWLORE_REQUIRE(v.scores.size() == v.tokens.size(), gguf.source(), ": tokenizer.ggml.scores has ", v.scores.size(),
                   " entries for ", v.tokens.size(), " tokens");
    v.space_prefix = !gguf.has("tokenizer.ggml.add_space_prefix") || gguf.get_bool("tokenizer.ggml.add_space_prefix")
                         ? SpacePrefix::kFirst : SpacePrefix::kNone;
    v.unk = (int)gguf.get_int("tokenizer.ggml.unknown_token_id", -1);
    OWLORE_REQUIRE(v.unk >= -1 && v.unk < (int64_t)v.tokens.size(), gguf.source(), ": tokenizer.ggml.unknown_token_id is ",
                   v.unk, ", outside the vocabulary");
  } else {
    v.merges = gguf.merges();
  }
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
  if (v.model == TokenizerModel::kGpt2) v.pre = gguf.tokenizer_pre();
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
