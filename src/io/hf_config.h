// Hugging Face config.json <-> ModelConfig, for LLaMA- and Mistral-family checkpoints.
// Reading accepts model_type "llama" or "mistral" and refuses, by name, the features the runtime
// does not implement (biases, rope_scaling other than llama3, activations other than SiLU)
// instead of silently loading a model it would run wrong. Writing produces a config that
// transformers' LlamaForCausalLM (MistralForCausalLM for a sliding window) loads as is.
#pragma once
#include <string>

#include "model/config.h"

namespace owlore {

// Parses config.json text; `source` (the file path) names it in errors. Defaults as in
// transformers' LlamaConfig: num_key_value_heads = num_attention_heads,
// head_dim = hidden_size / num_attention_heads, rope_theta 1e4, rms_norm_eps 1e-6,
// tie_word_embeddings false. The result is validate()d.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);
ModelConfig read_hf_config(const std::string& path);

// config.json text for LlamaForCausalLM; torch_dtype is "bfloat16", "float16" or "float32".
std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype);
// Writes it atomically (temporary file, fsync, rename).
void write_hf_config(const std::string& path, const ModelConfig& config, const std::string& torch_dtype);

}  // namespace owlore
