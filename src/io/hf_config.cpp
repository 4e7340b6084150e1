#include "io/hf_config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace owlore {

namespace {
using nlohmann::json;

int int_field(const json& j, const char* key, const std::string& source, bool required, int fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    OWLORE_REQUIRE(!required, source, ": missing required key '", key, "' (expected an integer)");
    return fallback;
  }
  OWLORE_REQUIRE(it->is_number_integer(), source, ": key '", key, "' is ", it->dump(), ", expected an integer");
  const int64_t v = it->get<int64_t>();
  OWLORE_REQUIRE(v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(), source, ": key '", key,
                 "' = ", v, " does not fit in 32 bits");
  return (int)v;
}

// rope_theta and rms_norm_eps: a base and an epsilon, meaningful only finite and > 0 (as floats:
// 1e39 overflows to inf, 1e-50 underflows to 0).
float positive_float_field(const json& j, const char* key, const std::string& source, float fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  OWLORE_REQUIRE(it->is_number(), source, ": key '", key, "' is ", it->dump(), ", expected a number");
  const float v = (float)it->get<double>();
  OWLORE_REQUIRE(std::isfinite(v) && v > 0, source, ": key '", key, "' = ", it->dump(),
                 ", expected a finite 32-bit float > 0");
  return v;
}

// bos/eos ids are an integer, null, or (LLaMA-3.1 style) a list of integers: take the first.
int token_field(const json& j, const char* key, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return -1;
  const json& v = it->is_array() && !it->empty() ? (*it)[0] : *it;
  OWLORE_REQUIRE(v.is_number_integer(), source, ": key '", key, "' is ", it->dump(),
                 ", expected an integer or a list of integers");
  return (int)v.get<int64_t>();
}

// The shortest decimal that reads back as the same float, as a double: 1e-5f is written
// "1e-05", not "9.999999747378752e-06".
double shortest(float x) {
  char buf[32];
  for (int precision = 1; precision <= 9; precision++) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, (double)x);
    if ((float)std::strtod(buf, nullptr) == x) break;
  }
  return std::strtod(buf, nullptr);
}

std::string dir_name_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  const std::string dir = path.substr(0, slash);
  const size_t prev = dir.find_last_of('/');
  return prev == std::string::npos ? dir : dir.substr(prev + 1);
}
}  // namespace

ModelConfig parse_hf_config(const std::string& text, const std::string& source) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  OWLORE_REQUIRE(!j.is_discarded(), source, ": not valid JSON");
  OWLORE_REQUIRE(j.is_object(), source, ": JSON is a ", j.type_name(), ", expected an object");

  if (j.contains("model_type")) {
    OWLORE_REQUIRE(j["model_type"].is_string(), source, ": key 'model_type' is ", j["model_type"].dump(),
                   ", expected a string");
    const std::string type = j["model_type"].get<std::string>();
    OWLORE_REQUIRE(type == "llama" || type == "mistral", source, ": model_type '", type,
                   "' is not supported (expected 'llama' or 'mistral')");
  }
  if (j.contains("hidden_act") && !j["hidden_act"].is_null()) {
    OWLORE_REQUIRE(j["hidden_act"] == "silu", source, ": hidden_act ", j["hidden_act"].dump(),
                   " is not supported (expected \"silu\")");
  }
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    if (j.contains(bias))
      OWLORE_REQUIRE(j[bias] == false, source, ": ", bias, " = ", j[bias].dump(), " is not supported (expected false)");
  }
  ModelConfig c;
  // Plain RoPE and LLaMA-3.1's llama3 scaling; the other variants (linear, dynamic, yarn, ...) are
  // refused. transformers < 5 writes rope_scaling (null for plain RoPE) and a top-level
  // rope_theta; transformers >= 5 writes rope_parameters {"rope_type": ..., "rope_theta": ...,
  // and the scaling's keys}.
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& rope = j[key];
    const std::string where = source + ": " + key;
    OWLORE_REQUIRE(rope.is_object(), where, " is ", rope.dump(), ", expected an object or null");
    const json type = rope.contains("rope_type") ? rope["rope_type"] : rope.contains("type") ? rope["type"] : json("default");
    if (type == "default") continue;
    OWLORE_REQUIRE(type == "llama3", where, " ", rope.dump(),
                   " is not supported (expected rope_type \"default\", plain RoPE, or \"llama3\")");
    RopeScaling& r = c.rope_scaling;
    r.type = RopeScalingType::llama3;
    for (auto [name, field] : {std::pair{"factor", &r.factor}, std::pair{"low_freq_factor", &r.low_freq_factor},
                               std::pair{"high_freq_factor", &r.high_freq_factor}}) {
      OWLORE_REQUIRE(rope.contains(name) && !rope[name].is_null(), where, ": missing required key '", name,
                     "' (rope_type llama3, expected a number)");
      *field = positive_float_field(rope, name, where, 0.0f);
    }
    r.original_max_pos = int_field(rope, "original_max_position_embeddings", where, true, 0);
    OWLORE_REQUIRE(r.original_max_pos > 0, where, ": key 'original_max_position_embeddings' = ", r.original_max_pos,
                   ", expected > 0");
    OWLORE_REQUIRE(r.high_freq_factor > r.low_freq_factor, where, ": high_freq_factor ", r.high_freq_factor,
                   " must be greater than low_freq_factor ", r.low_freq_factor);
  }

  c.name = dir_name_of(source);
  if (c.name.empty() || c.name == ".") c.name = "hf";
  c.d_model = int_field(j, "hidden_size", source, true, 0);
  c.ffn = int_field(j, "intermediate_size", source, true, 0);
  c.n_layers = int_field(j, "num_hidden_layers", source, true, 0);
  c.n_heads = int_field(j, "num_attention_heads", source, true, 0);
  c.n_kv_heads = int_field(j, "num_key_value_heads", source, false, c.n_heads);
  OWLORE_REQUIRE(c.n_heads > 0, source, ": num_attention_heads must be > 0, got ", c.n_heads);
  c.head_dim = int_field(j, "head_dim", source, false, c.d_model / c.n_heads);
  c.vocab = int_field(j, "vocab_size", source, true, 0);
  c.max_seq = int_field(j, "max_position_embeddings", source, false, 2048);
  c.rope_theta = positive_float_field(j, "rope_theta", source, 10000.0f);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    c.rope_theta = positive_float_field(j["rope_parameters"], "rope_theta", source + ": rope_parameters", c.rope_theta);
  c.norm_eps = positive_float_field(j, "rms_norm_eps", source, 1e-6f);
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    OWLORE_REQUIRE(j["tie_word_embeddings"].is_boolean(), source, ": key 'tie_word_embeddings' is ",
                   j["tie_word_embeddings"].dump(), ", expected true or false");
    c.tied_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  // Mistral-7B v0.1: 4096; v0.2 and later: null (full attention). LLaMA configs have none.
  c.sliding_window = int_field(j, "sliding_window", source, false, 0);
  OWLORE_REQUIRE(c.sliding_window >= 0, source, ": key 'sliding_window' = ", c.sliding_window,
                 ", expected a positive integer or null");
  c.bos_token = token_field(j, "bos_token_id", source);
  c.eos_token = token_field(j, "eos_token_id", source);
  try {
    c.validate();
  } catch (const Error& e) {
    fail(source, ": ", e.what());
  }
  return c;
}

ModelConfig read_hf_config(const std::string& path) {
  return parse_hf_config(read_regular_file(path, "Hugging Face config.json"), path);
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  OWLORE_REQUIRE(torch_dtype == "bfloat16" || torch_dtype == "float16" || torch_dtype == "float32",
                 "config.json: torch_dtype '", torch_dtype, "' (expected bfloat16, float16 or float32)");
  nlohmann::ordered_json j;
  // A sliding window is Mistral's (LlamaForCausalLM would ignore it and attend to everything).
  const bool mistral = c.sliding_window > 0;
  j["architectures"] = {mistral ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = mistral ? "mistral" : "llama";
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.ffn;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  j["max_position_embeddings"] = c.max_seq > 0 ? c.max_seq : 2048;
  // Both spellings: top-level rope_theta and rope_scaling for transformers 4.x, rope_parameters for 5.x.
  j["rope_theta"] = shortest(c.rope_theta);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", shortest(c.rope_theta)}};
  if (c.rope_scaling.type == RopeScalingType::llama3) {
    const RopeScaling& r = c.rope_scaling;
    const nlohmann::ordered_json scaling = {{"rope_type", "llama3"},
                                            {"factor", shortest(r.factor)},
                                            {"low_freq_factor", shortest(r.low_freq_factor)},
                                            {"high_freq_factor", shortest(r.high_freq_factor)},
                                            {"original_max_position_embeddings", r.original_max_pos}};
    j["rope_scaling"] = scaling;
    j["rope_parameters"] = scaling;
    j["rope_parameters"]["rope_theta"] = shortest(c.rope_theta);
  }
  if (mistral) j["sliding_window"] = c.sliding_window;
  j["rms_norm_eps"] = shortest(c.norm_eps);
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["bos_token_id"] = c.bos_token >= 0 ? nlohmann::ordered_json(c.bos_token) : nlohmann::ordered_json(nullptr);
  j["eos_token_id"] = c.eos_token >= 0 ? nlohmann::ordered_json(c.eos_token) : nlohmann::ordered_json(nullptr);
  j["torch_dtype"] = torch_dtype;  // transformers 4.x
  j["dtype"] = torch_dtype;        // transformers 5.x
  return j.dump(2) + "\n";
}

void write_hf_config(const std::string& path, const ModelConfig& config, const std::string& torch_dtype) {
  const std::string text = hf_config_json(config, torch_dtype);
  AtomicFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace owlore
