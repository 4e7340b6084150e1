#include "model/decode_cpu.h"

#include <cmath>

#include "base/error.h"
#include "kernels/ref/ops_ref.h"

namespace owlore {

CpuDecoder::CpuDecoder(const ModelLayout& layout, const float* weights, int max_tokens)
    : layout_(layout), w_(weights), max_tokens_(max_tokens), inv_freq_(rope_inv_freq(layout.config)) {
  const ModelConfig& c = layout.config;
  k_cache_.assign(c.n_layers, std::vector<float>((size_t)max_tokens * c.kv_dim()));
  v_cache_ = k_cache_;
  x_.resize(c.d_model), ln_.resize(c.d_model), proj_.resize(c.d_model), rstd_.resize(1);
  qkv_.resize(c.q_dim() + 2 * c.kv_dim()), att_.resize(c.q_dim());
  gate_up_.resize(2 * c.ffn), h_.resize(c.ffn), logits_.resize(c.vocab);
}

const std::vector<float>& CpuDecoder::step(int32_t token) {
  const ModelConfig& c = layout_.config;
  OWLORE_REQUIRE(position_ < max_tokens_, "generation reached its limit of ", max_tokens_, " tokens");
  // Past the window, the model attends to the last sliding_window tokens only; this decoder to all.
  OWLORE_REQUIRE(c.sliding_window <= 0 || position_ < c.sliding_window,
                 "generation reached the model's attention window (config.json sliding_window ", c.sliding_window,
                 " tokens), past which owlore's full causal attention would compute another model");
  OWLORE_REQUIRE(token >= 0 && token < c.vocab, "token ", token, " is outside the vocabulary (", c.vocab, ")");
  const int C = c.d_model, F = c.ffn, hd = c.head_dim, Hq = c.n_heads, Hkv = c.n_kv_heads, kv = c.kv_dim();
  const int qkv_dim = c.q_dim() + 2 * kv, group = Hq / Hkv, t = position_;
  encoder_forward_ref(x_.data(), &token, w_ + layout_.embedding, 1, C, c.vocab);
  for (int l = 0; l < c.n_layers; l++) {
    const LayerOffsets& p = layout_.layers[l];
    rmsnorm_forward_ref(ln_.data(), rstd_.data(), x_.data(), w_ + p.attn_norm, 1, C, c.norm_eps);
    matmul_forward_ref(qkv_.data(), ln_.data(), w_ + p.wqkv, 1, C, qkv_dim);
    rope_forward_ref(qkv_.data(), qkv_.data(), 1, 1, Hq + Hkv, hd, qkv_dim, inv_freq_.data(), t);
    float* k_row = k_cache_[l].data() + (size_t)t * kv;
    float* v_row = v_cache_[l].data() + (size_t)t * kv;
    for (int i = 0; i < kv; i++) k_row[i] = qkv_[c.q_dim() + i], v_row[i] = qkv_[c.q_dim() + kv + i];
    // One query row against the cache: softmax(q k^T / sqrt(hd)) v, per query head.
    const float scale = 1.0f / std::sqrt((float)hd);
    std::vector<float> scores(t + 1);
    for (int h = 0; h < Hq; h++) {
      const float* q = qkv_.data() + h * hd;
      const int kv_head = h / group;
      float max_score = -INFINITY;
      for (int s = 0; s <= t; s++) {
        const float* k = k_cache_[l].data() + (size_t)s * kv + kv_head * hd;
        float dot = 0;
        for (int i = 0; i < hd; i++) dot += q[i] * k[i];
        scores[s] = dot * scale;
        max_score = std::max(max_score, scores[s]);
      }
      float sum = 0;
      for (int s = 0; s <= t; s++) sum += (scores[s] = std::exp(scores[s] - max_score));
      float* o = att_.data() + h * hd;
      for (int i = 0; i < hd; i++) o[i] = 0;
      for (int s = 0; s <= t; s++) {
        const float* v = v_cache_[l].data() + (size_t)s * kv + kv_head * hd;
        for (int i = 0; i < hd; i++) o[i] += scores[s] / sum * v[i];
      }
    }
    matmul_forward_ref(proj_.data(), att_.data(), w_ + p.wo, 1, c.q_dim(), C);
    residual_forward_ref(x_.data(), x_.data(), proj_.data(), C);
    rmsnorm_forward_ref(ln_.data(), rstd_.data(), x_.data(), w_ + p.mlp_norm, 1, C, c.norm_eps);
    matmul_forward_ref(gate_up_.data(), ln_.data(), w_ + p.wgate_up, 1, C, 2 * F);
    swiglu_forward_ref(h_.data(), gate_up_.data(), 1, F);
    matmul_forward_ref(proj_.data(), h_.data(), w_ + p.wdown, 1, F, C);
    residual_forward_ref(x_.data(), x_.data(), proj_.data(), C);
  }
  rmsnorm_forward_ref(ln_.data(), rstd_.data(), x_.data(), w_ + layout_.final_norm, 1, C, c.norm_eps);
  matmul_forward_ref(logits_.data(), ln_.data(), w_ + layout_.lm_head, 1, C, c.vocab);
  position_++;
  return logits_;
}

}  // namespace owlore
