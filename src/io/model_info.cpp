#include "io/model_info.h"

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace owlore {

namespace {
namespace fs = std::filesystem;

struct TypeCount {
  int64_t tensors = 0, elements = 0;
  uint64_t bytes = 0;
};

void print_config(const ModelConfig& c, std::ostream& out) {
  out << "config:\n"
      << "  layers            " << c.n_layers << "\n"
      << "  d_model           " << c.d_model << "\n"
      << "  heads / kv heads  " << c.n_heads << " / " << c.n_kv_heads << " (head_dim " << c.head_dim << ")\n"
      << "  ffn               " << c.ffn << "\n"
      << "  vocab             " << c.vocab << "\n"
      << "  max_seq           " << c.max_seq << "\n"
      << "  rope_theta        " << c.rope_theta << "\n";
  if (c.rope_scaling.type == RopeScalingType::llama3)
    out << "  rope_scaling      llama3 (factor " << c.rope_scaling.factor << ", low_freq_factor "
        << c.rope_scaling.low_freq_factor << ", high_freq_factor " << c.rope_scaling.high_freq_factor
        << ", original_max_position_embeddings " << c.rope_scaling.original_max_pos << ")\n";
  if (c.sliding_window > 0) out << "  sliding_window    " << c.sliding_window << "\n";
  out
      << "  norm_eps          " << c.norm_eps << "\n"
      << "  tied embeddings   " << (c.tied_embeddings ? "yes" : "no") << "\n"
      << "  bos / eos         " << c.bos_token << " / " << c.eos_token << "\n"
      << "parameters (config): " << c.total_params() << "\n";
}

void print_types(const std::map<std::string, TypeCount>& types, std::ostream& out) {
  int64_t tensors = 0, elements = 0;
  uint64_t bytes = 0;
  for (const auto& [_, t] : types) {
    tensors += t.tensors;
    elements += t.elements;
    bytes += t.bytes;
  }
  out << "parameters (file):   " << elements << " in " << tensors << " tensors, " << bytes << " bytes\n";
  out << "tensor types:\n";
  for (const auto& [name, t] : types)
    out << "  " << name << ": " << t.tensors << " tensors, " << t.elements << " elements, " << t.bytes << " bytes\n";
}

void print_gguf(const std::string& path, std::ostream& out) {
  const GgufFile file(path);
  out << "file: " << path << "\nformat: GGUF v" << file.version() << ", " << file.keys().size() << " metadata keys, "
      << file.tensors().size() << " tensors\n";
  if (file.has("general.name")) out << "name: " << file.get_string("general.name") << "\n";
  out << "architecture: " << file.get_string("general.architecture", "(none)") << "\n";
  try {
    print_config(file.config(), out);
  } catch (const Error& e) {
    out << "config: not a supported LLaMA model: " << e.what() << "\n";
  }
  std::map<std::string, TypeCount> types;
  for (const GgufTensor& t : file.tensors()) {
    TypeCount& c = types[ggml_type_name(t.type)];
    c.tensors++;
    c.elements += t.numel();
    c.bytes += t.nbytes;
  }
  print_types(types, out);
  if (file.has("tokenizer.ggml.tokens")) {
    out << "tokenizer: " << file.get("tokenizer.ggml.tokens").array_size() << " tokens";
    if (file.has("tokenizer.ggml.merges")) out << ", " << file.get("tokenizer.ggml.merges").array_size() << " merges";
    out << " (model '" << file.tokenizer_model() << "', pre '" << file.tokenizer_pre() << "', bos " << file.bos_id()
        << ", eos " << file.eos_id() << ", pad " << file.padding_id() << ")\n";
  } else {
    out << "tokenizer: none in file\n";
  }
}

void print_hf(const std::string& path, std::ostream& out) {
  std::error_code ec;
  std::string dir = path, weights;
  if (fs::is_directory(path, ec)) {
    weights = fs::exists(path + "/model.safetensors", ec) ? path + "/model.safetensors"
                                                          : path + "/model.safetensors.index.json";
  } else {
    weights = path;
    dir = fs::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
  }
  OWLORE_REQUIRE(fs::exists(weights, ec), path, ": no model.safetensors or model.safetensors.index.json");
  std::vector<std::string> files;
  if (weights.size() >= 11 && weights.compare(weights.size() - 11, 11, ".index.json") == 0) {
    const nlohmann::json index =
        nlohmann::json::parse(read_regular_file(weights, "safetensors index"), nullptr, /*allow_exceptions=*/false);
    OWLORE_REQUIRE(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), weights,
                   ": expected an object with a 'weight_map'");
    std::map<std::string, bool> seen;
    for (const auto& item : index["weight_map"].items()) {
      OWLORE_REQUIRE(item.value().is_string(), weights, ": weight_map entry '", item.key(), "' is not a string");
      if (!seen[item.value().get<std::string>()]) {
        seen[item.value().get<std::string>()] = true;
        files.push_back(dir + "/" + item.value().get<std::string>());
      }
    }
  } else {
    files.push_back(weights);
  }
  out << "file: " << weights << "\nformat: safetensors, " << files.size() << " file(s)\n";
  const std::string config = dir + "/config.json";
  if (fs::exists(config, ec)) {
    print_config(read_hf_config(config), out);
  } else {
    out << "config: no config.json beside the weights\n";
  }
  std::map<std::string, TypeCount> types;
  for (const std::string& f : files) {
    const SafetensorsFile st(f);
    for (const StTensor& t : st.tensors()) {
      TypeCount& c = types[st_dtype_name(t.dtype)];
      c.tensors++;
      c.elements += t.numel();
      c.bytes += t.nbytes();
    }
  }
  print_types(types, out);
  const std::string tokenizer = dir + "/tokenizer.json";
  if (fs::exists(tokenizer, ec)) {
    const nlohmann::json tok =
        nlohmann::json::parse(read_regular_file(tokenizer, "tokenizer file"), nullptr, /*allow_exceptions=*/false);
    size_t vocab = 0, added = 0;
    if (tok.is_object() && tok.contains("model") && tok["model"].is_object() && tok["model"].contains("vocab"))
      vocab = tok["model"]["vocab"].size();
    if (tok.is_object() && tok.contains("added_tokens") && tok["added_tokens"].is_array())
      added = tok["added_tokens"].size();
    out << "tokenizer: tokenizer.json, " << vocab << " tokens in the model vocab, " << added << " added tokens\n";
  } else {
    out << "tokenizer: none beside the weights\n";
  }
}
}  // namespace

void print_model_info(const std::string& path, std::ostream& out) {
  std::error_code ec;
  OWLORE_REQUIRE(fs::exists(path, ec), path, ": no such file or directory");
  const bool gguf = !fs::is_directory(path, ec) && RegularFile(path, "model file").read_prefix(4) == "GGUF";
  if (gguf) {
    print_gguf(path, out);
  } else {
    print_hf(path, out);
  }
}

}  // namespace owlore
