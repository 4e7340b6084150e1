#include "io/model_tokenizer.h"

#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/tiktoken.h"

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
  if (v.model == TokenizerModel::kGpt2) {
    v.pre = gguf.tokenizer_pre();
    // llama.cpp tokenizes LLaMA-3 with ignore_merges, as HF's tokenizer.json for it says: some of
    // its tokens are not reachable by merges, only as a whole piece (as tiktoken finds them).
    v.ignore_merges = v.pre == "llama-bpe";
  }
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

namespace owlore {

std::string load_model_chat_template(const std::string& model_path, std::string& source) {
  namespace fs = std::filesystem;
  source.clear();
  if (model_path.empty()) return "";
  if (fs::path(model_path).extension() == ".gguf") {
    const GgufFile gguf(model_path);
    source = model_path + ": tokenizer.chat_template";
    return gguf.get_string("tokenizer.chat_template", "");
  }
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  // transformers reads chat_template.jinja when it is there, else tokenizer_config.json's.
  const fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja)) {
    source = jinja.string();
    return read_regular_file(source, "chat template");
  }
  const fs::path config = dir / "tokenizer_config.json";
  if (!fs::exists(config)) return "";
  source = config.string() + ": chat_template";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_regular_file(config.string(), "tokenizer config"));
  } catch (const nlohmann::json::exception& e) {
    fail(config.string(), ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object() || !j.contains("chat_template")) return "";
  const nlohmann::json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  // A list of named templates ({"name", "template"}): the "default" one is what chat data uses.
  if (t.is_array())
    for (const nlohmann::json& named : t)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string())
        return named["template"].get<std::string>();
  fail(source, ": expected a string (or a list with a \"default\" template)");
}

ChatTemplate resolve_chat_template(ChatTemplate choice, const std::string& model_path, std::string& why) {
  why.clear();
  if (choice != ChatTemplate::kAuto) return choice;
  std::string source;
  const std::string jinja = load_model_chat_template(model_path, source);
  if (jinja.empty()) {
    why = model_path.empty() ? "a preset has no chat template of its own"
                             : model_path + " has no chat template (no tokenizer_config.json chat_template, "
                                            "chat_template.jinja or GGUF tokenizer.chat_template)";
    return ChatTemplate::kAuto;
  }
  try {
    return detect_chat_template(jinja, source);
  } catch (const Error& e) {
    why = e.what();
    return ChatTemplate::kAuto;
  }
}

InstructOptions chat_data_options(const std::string& model_path, ChatTemplate chat_template, TrainOn train_on,
                                  const std::string& system, bool skip_bad_lines, const Tokenizer* tokenizer,
                                  int vocab, const std::string& model_name, const std::string& hint) {
  InstructOptions o;
  o.chat_template = resolve_chat_template(chat_template, model_path, o.no_template);
  o.train_on = train_on;
  o.system = system;
  o.skip_bad_lines = skip_bad_lines;
  if (!tokenizer) o.no_tokenizer = byte_level_refusal(vocab, model_name, hint);
  return o;
}

}  // namespace owlore
