// LLaMA-class model shape: the presets of DESIGN.md §1 and the tiny test shapes with odd sizes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace owlore {

struct ModelConfig {
  std::string name;
  int n_layers = 0;
  int d_model = 0;      // C
  int n_heads = 0;      // query heads
  int n_kv_heads = 0;   // key/value heads; n_heads % n_kv_heads == 0 (grouped-query attention)
  int head_dim = 0;     // usually d_model / n_heads
  int ffn = 0;          // SwiGLU hidden size
  int vocab = 0;
  int max_seq = 0;      // longest context the model was trained for (informational)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_embeddings = false;  // LM head shares the token embedding matrix
  int bos_token = -1, eos_token = -1;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // Throws owlore::Error naming the field if the shape is inconsistent, not finite or positive
  // where it must be, or too large to count (q_dim() past 32 bits, parameters past 64).
  void validate() const;
  // Parameters per decoder layer and in the whole model (tied head counted once); computed with
  // checked arithmetic, they throw where validate() would.
  int64_t layer_params() const;
  int64_t total_params() const;
};

// Known presets: smollm2-135m, tinyllama-1.1b, llama2-7b, llama3-8b, mistral-7b,
// tiny (odd sizes, GQA 3:1, untied), tiny-tied, tiny-mha, and tiny-gpu / tiny-gpu128 (odd sizes
// with the head_dim 64 / 128 the GPU attention kernel takes).
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace owlore
