// Where every parameter lives in the one weight arena (DESIGN.md §2): embedding, then the
// decoder layers one after another, then the final norm, then the LM head if it is untied.
// Inside a layer: attn_norm, wq, wk, wv (back to back: one fused qkv GEMM), wo, mlp_norm,
// w_gate, w_up (back to back: one fused gate_up GEMM), w_down. Offsets are in elements, so the
// same layout serves the fp32 CPU arena and the bf16 GPU arena.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace owlore {

struct TensorSlot {
  std::string name;     // Hugging Face name, e.g. "model.layers.3.self_attn.q_proj.weight"
  int64_t offset = 0;   // first element in the arena
  int64_t rows = 0;     // 1 for vectors (norm weights)
  int64_t cols = 0;
  int layer = -1;       // decoder layer, or -1 for embedding / final norm / head
  bool is_matrix() const { return rows > 1; }
  int64_t numel() const { return rows * cols; }
};

struct LayerOffsets {
  int64_t begin = 0, end = 0;  // the layer's contiguous span
  int64_t attn_norm, wqkv, wo, mlp_norm, wgate_up, wdown;
  // wq = wqkv, wk = wqkv + q_dim*C, wv = wk + kv_dim*C; wup = wgate_up + ffn*C
};

struct ModelLayout {
  ModelConfig config;
  std::vector<TensorSlot> tensors;   // every tensor, in arena order
  std::vector<LayerOffsets> layers;  // per decoder layer
  int64_t embedding = 0;             // (V,C)
  int64_t final_norm = 0;            // (C)
  int64_t lm_head = 0;               // (V,C); == embedding when tied
  int64_t total = 0;                 // elements in the arena

  explicit ModelLayout(const ModelConfig& config);
  // The slot with this Hugging Face name, or nullptr.
  const TensorSlot* find(const std::string& hf_name) const;
};

}  // namespace owlore
