#include "model/layout.h"

namespace owlore {

ModelLayout::ModelLayout(const ModelConfig& cfg) : config(cfg) {
  cfg.validate();
  const int64_t C = cfg.d_model;
  int64_t cursor = 0;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, int layer) {
    tensors.push_back(TensorSlot{name, cursor, rows, cols, layer});
    cursor += rows * cols;
    return tensors.back().offset;
  };
  embedding = add("model.embed_tokens.weight", cfg.vocab, C, -1);
  for (int l = 0; l < cfg.n_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerOffsets lo;
    lo.begin = cursor;
    lo.attn_norm = add(p + "input_layernorm.weight", 1, C, l);
    lo.wqkv = add(p + "self_attn.q_proj.weight", cfg.q_dim(), C, l);
    add(p + "self_attn.k_proj.weight", cfg.kv_dim(), C, l);
    add(p + "self_attn.v_proj.weight", cfg.kv_dim(), C, l);
    lo.wo = add(p + "self_attn.o_proj.weight", C, cfg.q_dim(), l);
    lo.mlp_norm = add(p + "post_attention_layernorm.weight", 1, C, l);
    lo.wgate_up = add(p + "mlp.gate_proj.weight", cfg.ffn, C, l);
    add(p + "mlp.up_proj.weight", cfg.ffn, C, l);
    lo.wdown = add(p + "mlp.down_proj.weight", C, cfg.ffn, l);
    lo.end = cursor;
    layers.push_back(lo);
  }
  final_norm = add("model.norm.weight", 1, C, -1);
  lm_head = cfg.tied_embeddings ? embedding : add("lm_head.weight", cfg.vocab, C, -1);
  total = cursor;
}

const TensorSlot* ModelLayout::find(const std::string& hf_name) const {
  for (const TensorSlot& t : tensors)
    if (t.name == hf_name) return &t;
  return nullptr;
}

}  // namespace owlore
