// LLaMA-class model shape: the presets of DESIGN.md §1 and the tiny test shapes with odd sizes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace owlore {

// RoPE frequency scaling, config.json's rope_scaling (transformers 5: rope_parameters).
//   none:   f_i = theta^(-2i/head_dim)
//   llama3: LLaMA-3.1's long-context rescaling of those f_i by wavelength 2π/f_i:
//           > orig/low_freq_factor (low frequencies): f_i / factor;
//           < orig/high_freq_factor (high frequencies): f_i unchanged;
//           between: (1 - s) f_i / factor + s f_i, s = (orig/wavelength - low) / (high - low),
//           orig = original_max_position_embeddings.
enum class RopeScalingType { none, llama3 };
struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  float factor = 1.0f, low_freq_factor = 1.0f, high_freq_factor = 4.0f;
  int original_max_pos = 0;
};

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
  RopeScaling rope_scaling;
  // Mistral's sliding-window attention (config.json sliding_window): a token attends to the
  // last sliding_window tokens only. 0: none. The runtime's attention is full causal, the same
  // as the window's for sequences no longer than it, so longer ones are refused (require_seq_fits).
  int sliding_window = 0;
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

// The head_dim/2 RoPE inverse frequencies f_i of `c` (rope_theta, head_dim, rope_scaling), in
// double: the double CPU twin uses them as they are, the float twin and the GPU kernel round
// each to float. The one place RoPE frequencies are computed.
std::vector<double> rope_inv_freq(const ModelConfig& c);

// Throws owlore::Error naming --seq `seq` if it is longer than the model's context (max_seq) or
// its sliding attention window, beyond which full causal attention would compute another model.
void require_seq_fits(const ModelConfig& c, int seq);

// Known presets: smollm2-135m, tinyllama-1.1b, llama2-7b, llama3-8b, llama3.1-8b, llama3.2-1b,
// llama3.2-3b (llama3 rope_scaling), mistral-7b,
// tiny (odd sizes, GQA 3:1, untied), tiny-tied, tiny-mha, and tiny-gpu / tiny-gpu128 (odd sizes
// with the head_dim 64 / 128 the GPU attention kernel takes).
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace owlore
