#include "io/tokenizer_export.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "base/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/model_tokenizer.h"
#include "io/tiktoken.h"

namespace owlore {

const char* const kTokenizerFileNames[6] = {"tokenizer.json",         "tokenizer_config.json", "special_tokens_map.json",
                                            "generation_config.json", "chat_template.jinja",   "tokenizer.model"};

const std::string* TokenizerFiles::find(const std::string& name) const {
  for (const auto& [file, bytes] : files)
    if (file == name) return &bytes;
  return nullptr;
}

namespace {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// Tokens are byte-level strings and specials as written, so valid UTF-8 in any real vocabulary;
// one that is not cannot be JSON, and the message says which file was being written.
std::string dump(const ojson& j, const char* file, int indent) {
  try {
    return j.dump(indent) + (indent >= 0 ? "\n" : "");
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": cannot be written as JSON (", e.what(), ")");
  }
}

const std::string& token_at(const BpeVocab& v, int id) { return v.tokens[(size_t)id]; }

bool is_added(int type) { return type == kTokenControl || type == kTokenUserDefined; }

// The Hugging Face pre-tokenizer that owlore's "gpt2" / "smollm" / "llama-bpe" reproduce
// (io/tokenizer.h); "llama-bpe" is written as Meta-Llama-3's tokenizer.json has it.
ojson pre_tokenizer(const std::string& pre) {
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  if (pre == "gpt2") return byte_level;
  if (pre == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers", ojson::array({ojson{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}};
  if (pre == "llama-bpe") {
    const ojson split = {{"type", "Split"},
                         {"pattern", {{"Regex", kLlama3SplitPattern}}},
                         {"behavior", "Isolated"},
                         {"invert", false}};
    const ojson bytes = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
    return {{"type", "Sequence"}, {"pretokenizers", ojson::array({split, bytes})}};
  }
  fail("tokenizer.json export: pre-tokenizer \"", pre,
       "\" has no Hugging Face equivalent here (supported: gpt2, smollm, llama-bpe)");
}

// Special tokens as tokenizer_config.json and special_tokens_map.json name them.
void put_special_tokens(ojson& j, const BpeVocab& v, const TokenizerMetadata& meta) {
  for (const auto& [key, id] : {std::pair<const char*, int>{"bos_token", v.bos}, {"eos_token", v.eos},
                                {"pad_token", v.pad}, {"unk_token", meta.unk}})
    if (id >= 0) j[key] = token_at(v, id);
}

ojson id_or_null(int id) { return id >= 0 ? ojson(id) : ojson(nullptr); }

// A Hugging Face directory's tokenizer: its own files as they are, and the derived ones it lacks.
TokenizerFiles hf_directory_files(const fs::path& dir, const ModelConfig& config) {
  TokenizerFiles out;
  for (const char* name : kTokenizerFileNames) {
    const fs::path file = dir / name;
    std::error_code ec;
    if (fs::exists(file, ec)) out.files.emplace_back(name, read_regular_file(file.string(), name));
  }
  const std::string* json = out.find("tokenizer.json");
  const std::string* model = out.find("tokenizer.model");
  BpeVocab vocab;
  if (!json && model && looks_like_tiktoken(model->substr(0, 256))) {
    // Meta's LLaMA-3 tiktoken file: Hugging Face reads a tokenizer.json, so one is derived
    // (same ids); the tokenizer.model travels too, for tiktoken users.
    vocab = parse_tiktoken_model(*model, (dir / "tokenizer.model").string());
    out.files.emplace_back("tokenizer.json", hf_tokenizer_json(vocab));
  } else {
    if (!json) return out;  // no tokenizer owlore reads: its other files (if any) travel as they are
    // The derived files need a vocabulary owlore reads; a tokenizer.json of another kind (a
    // SentencePiece one) still travels as is, with whatever the directory has beside it.
    try {
      vocab = load_tokenizer_json((dir / "tokenizer.json").string());
    } catch (const Error&) {
      return out;
    }
  }
  if (vocab.bos < 0 && config.bos_token >= 0 && config.bos_token < (int)vocab.tokens.size()) vocab.bos = config.bos_token;
  if (vocab.eos < 0 && config.eos_token >= 0 && config.eos_token < (int)vocab.tokens.size()) vocab.eos = config.eos_token;
  TokenizerMetadata meta;
  meta.model_max_length = config.max_seq;
  if (const std::string* jinja = out.find("chat_template.jinja")) meta.chat_template = *jinja;
  if (const std::string* text = out.find("tokenizer_config.json")) {
    const nlohmann::json c = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (c.is_object() && c.contains("chat_template") && c["chat_template"].is_string())
      meta.chat_template = c["chat_template"].get<std::string>();
  }
  meta.end_of_turn = end_of_turn_ids(vocab, meta.chat_template, {});
  if (!out.find("tokenizer_config.json"))
    out.files.emplace_back("tokenizer_config.json", hf_tokenizer_config_json(vocab, meta));
  if (!out.find("special_tokens_map.json"))
    out.files.emplace_back("special_tokens_map.json", hf_special_tokens_map_json(vocab, meta));
  if (!out.find("generation_config.json"))
    out.files.emplace_back("generation_config.json", hf_generation_config_json(vocab, meta));
  return out;
}

TokenizerFiles gguf_files(const std::string& path, const ModelConfig& config) {
  const GgufFile gguf(path);
  if (!gguf.has("tokenizer.ggml.tokens")) return {};
  const BpeVocab vocab = gguf_bpe_vocab(gguf);
  const Tokenizer usable(vocab);  // refuses, naming what, a vocabulary owlore could not tokenize with either
  TokenizerMetadata meta;
  meta.chat_template = gguf.get_string("tokenizer.chat_template", "");
  meta.unk = (int)gguf.get_int("tokenizer.ggml.unknown_token_id", -1);
  if (meta.unk >= (int)vocab.tokens.size()) meta.unk = -1;
  meta.model_max_length = config.max_seq;
  std::vector<int> extra;
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (const int64_t id = gguf.get_int(key, -1); id >= 0 && id < (int64_t)vocab.tokens.size()) extra.push_back((int)id);
  meta.end_of_turn = end_of_turn_ids(vocab, meta.chat_template, extra);
  TokenizerFiles out;
  out.files.emplace_back("tokenizer.json", hf_tokenizer_json(vocab));
  out.files.emplace_back("tokenizer_config.json", hf_tokenizer_config_json(vocab, meta));
  out.files.emplace_back("special_tokens_map.json", hf_special_tokens_map_json(vocab, meta));
  out.files.emplace_back("generation_config.json", hf_generation_config_json(vocab, meta));
  return out;
}

}  // namespace

std::vector<int> end_of_turn_ids(const BpeVocab& vocab, const std::string& chat_template, const std::vector<int>& extra) {
  std::vector<int> ids;
  auto add = [&](int id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  add(vocab.eos);
  for (const char* marker : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "</s>"}) {
    if (chat_template.find(marker) == std::string::npos) continue;
    const auto it = std::find(vocab.tokens.begin(), vocab.tokens.end(), marker);
    if (it != vocab.tokens.end()) add((int)(it - vocab.tokens.begin()));
  }
  for (int id : extra) add(id);
  // LLaMA-3 ends a turn with <|eot_id|> and a tool call with <|eom_id|> whatever the template
  // says (Meta's tokenizer.py stop_tokens are eos, eom, eot).
  if (vocab.pre == "llama-bpe")
    for (const char* marker : {"<|eom_id|>", "<|eot_id|>"}) {
      const auto it = std::find(vocab.tokens.begin(), vocab.tokens.end(), marker);
      if (it != vocab.tokens.end()) add((int)(it - vocab.tokens.begin()));
    }
  return ids;
}

std::string hf_tokenizer_json(const BpeVocab& v) {
  const size_t n = v.tokens.size();
  OWLORE_REQUIRE(v.token_types.empty() || v.token_types.size() == n, "tokenizer.json export: ", v.token_types.size(),
                 " token types for ", n, " tokens");
  auto type_of = [&](size_t id) { return v.token_types.empty() ? (int)kTokenNormal : v.token_types[id]; };
  // model.vocab is a map: a token written twice could not keep both ids.
  std::unordered_map<std::string, size_t> seen;
  seen.reserve(n);
  ojson vocab = ojson::object();
  // ordered_json looks a key up by linear search, so operator[] would make 128k tokens
  // (LLaMA-3) quadratic; `seen` already proves each key new, so entries are appended directly.
  auto& entries = vocab.get_ref<ojson::object_t&>();
  entries.reserve(n);
  for (size_t id = 0; id < n; id++) {
    const auto [it, fresh] = seen.emplace(v.tokens[id], id);
    OWLORE_REQUIRE(fresh, "tokenizer.json export: token \"", v.tokens[id], "\" has ids ", it->second, " and ", id,
                   "; a Hugging Face vocabulary maps each token to one id");
    entries.emplace_back(v.tokens[id], ojson(id));
  }
  ojson added = ojson::array();
  for (size_t id = 0; id < n; id++) {
    if (!is_added(type_of(id))) continue;
    added.push_back({{"id", id},
                     {"content", v.tokens[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", type_of(id) == kTokenControl}});
  }
  ojson merges = ojson::array();
  for (const std::string& m : v.merges) merges.push_back(m);
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre_tokenizer(v.pre);
  // owlore adds no bos/eos when it encodes (GGUF add_bos_token of the byte-level models is
  // false), so neither does the post-processor: ids stay identical.
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", v.ignore_merges},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};
  return dump(j, "tokenizer.json", -1);
}

std::string hf_tokenizer_config_json(const BpeVocab& v, const TokenizerMetadata& meta) {
  ojson j;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";  // reads tokenizer.json alone
  put_special_tokens(j, v, meta);
  // Decoding returns the text the tokens stand for: no clean-up of spaces before punctuation.
  j["clean_up_tokenization_spaces"] = false;
  if (meta.model_max_length > 0) j["model_max_length"] = meta.model_max_length;
  if (!meta.chat_template.empty()) j["chat_template"] = meta.chat_template;
  return dump(j, "tokenizer_config.json", 2);
}

std::string hf_special_tokens_map_json(const BpeVocab& v, const TokenizerMetadata& meta) {
  ojson j = ojson::object();
  put_special_tokens(j, v, meta);
  return dump(j, "special_tokens_map.json", 2);
}

std::string hf_generation_config_json(const BpeVocab& v, const TokenizerMetadata& meta) {
  ojson j;
  j["bos_token_id"] = id_or_null(v.bos);
  if (meta.end_of_turn.size() > 1)
    j["eos_token_id"] = meta.end_of_turn;
  else
    j["eos_token_id"] = id_or_null(meta.end_of_turn.empty() ? v.eos : meta.end_of_turn[0]);
  j["pad_token_id"] = id_or_null(v.pad);
  return dump(j, "generation_config.json", 2);
}

TokenizerFiles checkpoint_tokenizer_files(const std::string& model_path, const ModelConfig& config) {
  if (model_path.empty()) return {};
  std::error_code ec;
  if (fs::is_directory(model_path, ec)) return hf_directory_files(fs::path(model_path), config);
  if (fs::path(model_path).extension() == ".gguf" || RegularFile(model_path, "model file").read_prefix(4) == "GGUF")
    return gguf_files(model_path, config);
  const fs::path parent = fs::path(model_path).parent_path();
  return hf_directory_files(parent.empty() ? fs::path(".") : parent, config);
}

}  // namespace owlore
