#include "model/config.h"

#include <cmath>
#include <cstdint>

#include "base/error.h"

namespace owlore {

namespace {
// Parameters per layer and in the whole model, in int64 with every product and sum checked:
// the fields are 32-bit, but a hostile config (2^31 layers of 2^31-wide matrices) overflows
// 64 bits. False on overflow.
bool count_params(const ModelConfig& c, int64_t* layer, int64_t* total) {
  const int64_t C = c.d_model, q = (int64_t)c.n_heads * c.head_dim, kv = (int64_t)c.n_kv_heads * c.head_dim;
  int64_t proj = 0, attn = 0, mlp = 0, embedding = 0, layers = 0;
  const bool overflow =
      __builtin_add_overflow(q, kv, &proj) || __builtin_mul_overflow(C, proj, &attn)  // wq + wo, wk + wv:
      || __builtin_mul_overflow(attn, 2, &attn)                                        // 2·C·(q + kv)
      || __builtin_mul_overflow(C, 3 * (int64_t)c.ffn, &mlp)                           // gate, up, down
      || __builtin_add_overflow(attn, mlp, layer) || __builtin_add_overflow(*layer, 2 * C, layer)  // + 2 norms
      || __builtin_mul_overflow((int64_t)c.vocab, C * (c.tied_embeddings ? 1 : 2), &embedding)
      || __builtin_mul_overflow((int64_t)c.n_layers, *layer, &layers)
      || __builtin_add_overflow(embedding, layers, total) || __builtin_add_overflow(*total, C, total);  // + final norm
  return !overflow;
}
}  // namespace

void ModelConfig::validate() const {
  OWLORE_REQUIRE(n_layers > 0, "model config: n_layers must be > 0, got ", n_layers);
  OWLORE_REQUIRE(d_model > 0, "model config: d_model must be > 0, got ", d_model);
  OWLORE_REQUIRE(n_heads > 0 && n_kv_heads > 0, "model config: n_heads and n_kv_heads must be > 0, got ",
                 n_heads, " and ", n_kv_heads);
  OWLORE_REQUIRE(n_heads % n_kv_heads == 0, "model config: n_heads (", n_heads,
                 ") must be a multiple of n_kv_heads (", n_kv_heads, ")");
  OWLORE_REQUIRE(head_dim > 0 && head_dim % 2 == 0, "model config: head_dim must be even and > 0 (RoPE rotates pairs), got ",
                 head_dim);
  // q_dim() is an int (and n_kv_heads <= n_heads bounds kv_dim() by it).
  OWLORE_REQUIRE((int64_t)n_heads * head_dim <= INT32_MAX, "model config: n_heads ", n_heads, " x head_dim ", head_dim,
                 " = ", (int64_t)n_heads * head_dim, " overflows 32 bits");
  OWLORE_REQUIRE(ffn > 0, "model config: ffn must be > 0, got ", ffn);
  OWLORE_REQUIRE(vocab > 0, "model config: vocab must be > 0, got ", vocab);
  OWLORE_REQUIRE(std::isfinite(rope_theta) && rope_theta > 0, "model config: rope_theta must be finite and > 0, got ",
                 rope_theta);
  if (rope_scaling.type == RopeScalingType::llama3) {
    const RopeScaling& r = rope_scaling;
    OWLORE_REQUIRE(std::isfinite(r.factor) && r.factor > 0, "model config: rope_scaling factor must be finite and > 0, got ",
                   r.factor);
    OWLORE_REQUIRE(std::isfinite(r.low_freq_factor) && std::isfinite(r.high_freq_factor) && r.low_freq_factor > 0 &&
                       r.high_freq_factor > r.low_freq_factor,
                   "model config: rope_scaling needs 0 < low_freq_factor < high_freq_factor, got ", r.low_freq_factor,
                   " and ", r.high_freq_factor);
    OWLORE_REQUIRE(r.original_max_pos > 0, "model config: rope_scaling original_max_position_embeddings must be > 0, got ",
                   r.original_max_pos);
  }
  OWLORE_REQUIRE(sliding_window >= 0, "model config: sliding_window must be >= 0 (0: none), got ", sliding_window);
  OWLORE_REQUIRE(std::isfinite(norm_eps) && norm_eps > 0, "model config: norm_eps must be finite and > 0, got ",
                 norm_eps);
  int64_t layer, total;
  OWLORE_REQUIRE(count_params(*this, &layer, &total), "model config: n_layers ", n_layers, ", d_model ", d_model,
                 ", n_heads ", n_heads, ", head_dim ", head_dim, ", ffn ", ffn, ", vocab ", vocab,
                 " make more parameters than 64 bits count");
}

int64_t ModelConfig::layer_params() const {
  int64_t layer, total;
  OWLORE_REQUIRE(count_params(*this, &layer, &total), "model config: parameter count overflows 64 bits");
  return layer;
}

int64_t ModelConfig::total_params() const {
  int64_t layer, total;
  OWLORE_REQUIRE(count_params(*this, &layer, &total), "model config: parameter count overflows 64 bits");
  return total;
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  OWLORE_REQUIRE(c.head_dim > 0 && c.head_dim % 2 == 0, "RoPE: head_dim must be even and > 0, got ", c.head_dim);
  const RopeScaling& r = c.rope_scaling;
  std::vector<double> f(c.head_dim / 2);
  for (int i = 0; i < c.head_dim / 2; i++) {
    f[i] = 1.0 / std::pow((double)c.rope_theta, (double)(2 * i) / (double)c.head_dim);
    if (r.type != RopeScalingType::llama3) continue;
    const double wavelength = 2 * M_PI / f[i];
    const double low_freq_wavelength = r.original_max_pos / (double)r.low_freq_factor;
    const double high_freq_wavelength = r.original_max_pos / (double)r.high_freq_factor;
    if (wavelength > low_freq_wavelength) {
      f[i] /= r.factor;
    } else if (wavelength >= high_freq_wavelength) {
      const double s = (r.original_max_pos / wavelength - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f[i] = (1 - s) * f[i] / r.factor + s * f[i];
    }
  }
  return f;
}

void require_seq_fits(const ModelConfig& c, int seq) {
  OWLORE_REQUIRE(c.max_seq <= 0 || seq <= c.max_seq, "--seq ", seq, " does not fit the model's context of ", c.max_seq,
                 " tokens");
  OWLORE_REQUIRE(c.sliding_window <= 0 || seq <= c.sliding_window, "--seq ", seq,
                 " is longer than the model's attention window (config.json sliding_window ", c.sliding_window,
                 "): past it the model attends to the last ", c.sliding_window,
                 " tokens only, and owlore's full causal attention would compute another model (use --seq <= ",
                 c.sliding_window, ")");
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

// LLaMA-3.1/3.2's rope_scaling: low 1, high 4, original context 8192; `factor` differs.
ModelConfig llama3_scaled(ModelConfig c, float factor) {
  c.rope_scaling = {RopeScalingType::llama3, factor, 1.0f, 4.0f, 8192};
  return c;
}

std::vector<ModelConfig> all_presets() {
  return {
      make("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.0f, 1e-5f, true),
      make("tinyllama-1.1b", 22, 2048, 32, 4, 64, 5632, 32000, 2048, 10000.0f, 1e-5f, false),
      make("llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096, 10000.0f, 1e-5f, false),
      make("llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192, 500000.0f, 1e-5f, false),
      llama3_scaled(make("llama3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0f, 1e-5f, false), 8.0f),
      llama3_scaled(make("llama3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, 131072, 500000.0f, 1e-5f, true), 32.0f),
      llama3_scaled(make("llama3.2-3b", 28, 3072, 24, 8, 128, 8192, 128256, 131072, 500000.0f, 1e-5f, true), 32.0f),
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
