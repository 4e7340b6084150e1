#include "model/config.h"

#include "base/error.h"

namespace owlore {

void ModelConfig::validate() const {
  OWLORE_REQUIRE(n_layers > 0, "model config: n_layers must be > 0, got ", n_layers);
  OWLORE_REQUIRE(d_model > 0, "model config: d_model must be > 0, got ", d_model);
  OWLORE_REQUIRE(n_heads > 0 && n_kv_heads > 0, "model config: n_heads and n_kv_heads must be > 0, got ",
                 n_heads, " and ", n_kv_heads);
  OWLORE_REQUIRE(n_heads % n_kv_heads == 0, "model config: n_heads (", n_heads,
                 ") must be a multiple of n_kv_heads (", n_kv_heads, ")");
  OWLORE_REQUIRE(head_dim > 0 && head_dim % 2 == 0, "model config: head_dim must be even and > 0 (RoPE rotates pairs), got ",
                 head_dim);
  OWLORE_REQUIRE(ffn > 0, "model config: ffn must be > 0, got ", ffn);
  OWLORE_REQUIRE(vocab > 0, "model config: vocab must be > 0, got ", vocab);
  OWLORE_REQUIRE(rope_theta > 0, "model config: rope_theta must be > 0, got ", rope_theta);
  OWLORE_REQUIRE(norm_eps > 0, "model config: norm_eps must be > 0, got ", norm_eps);
}

int64_t ModelConfig::layer_params() const {
  const int64_t C = d_model;
  return 2 * C                              // attention and MLP norms
         + C * q_dim() + 2 * C * kv_dim()   // wq, wk, wv
         + (int64_t)q_dim() * C             // wo
         + 3 * C * (int64_t)ffn;            // gate, up, down
}

int64_t ModelConfig::total_params() const {
  const int64_t embedding = (int64_t)vocab * d_model;
  return embedding * (tied_embeddings ? 1 : 2) + (int64_t)n_layers * layer_params() + d_model;
}

namespace {
ModelConfig make(const char* name, int layers, int d, int heads, int kv, int head_dim, int ffn, int vocab,
                 int max_seq, float theta, float eps, bool tied) {
  ModelConfig c;
  c.name = name;
  c.n_layers = layers;
  c.d_model = d;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.head_dim = head_dim;
  c.ffn = ffn;
  c.vocab = vocab;
  c.max_seq = max_seq;
  c.rope_theta = theta;
  c.norm_eps = eps;
  c.tied_embeddings = tied;
  return c;
}

std::vector<ModelConfig> all_presets() {
  return {
      make("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.0f, 1e-5f, true),
      make("tinyllama-1.1b", 22, 2048, 32, 4, 64, 5632, 32000, 2048, 10000.0f, 1e-5f, false),
      make("llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096, 10000.0f, 1e-5f, false),
      make("llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192, 500000.0f, 1e-5f, false),
      make("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768, 1000000.0f, 1e-5f, false),
      // Test shapes: nothing a multiple of 8 where it can be avoided; vocab >= 256 so that
      // byte-level tokens fit.
      make("tiny", 3, 45, 9, 3, 10, 71, 261, 256, 10000.0f, 1e-5f, false),
      make("tiny-tied", 2, 36, 6, 2, 6, 53, 259, 256, 10000.0f, 1e-5f, true),
      make("tiny-mha", 2, 28, 4, 4, 14, 37, 257, 256, 500000.0f, 1e-6f, false),
      // The GPU attention kernel takes head_dim 64 or 128; everything else stays odd.
      make("tiny-gpu", 2, 195, 3, 1, 64, 331, 301, 512, 10000.0f, 1e-5f, false),
      make("tiny-gpu128", 2, 260, 4, 2, 128, 345, 263, 512, 100000.0f, 1e-5f, true),
  };
}
}  // namespace

ModelConfig preset_config(const std::string& name) {
  for (const ModelConfig& c : all_presets())
    if (c.name == name) return c;
  std::string known;
  for (const std::string& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown preset '", name, "' (known: ", known, ")");
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const ModelConfig& c : all_presets()) names.push_back(c.name);
  return names;
}

}  // namespace owlore
