#include "train/flops.h"

namespace owlore {

double training_flops_per_token(const ModelConfig& c, const TrainMask& mask, int seq) {
  const double C = c.d_model;
  const double matrix_params = C * (c.q_dim() + 2.0 * c.kv_dim()) + (double)c.q_dim() * C + 3.0 * C * c.ffn;
  const double attention = 2.0 * seq * c.q_dim();  // QKᵀ and PV, causal average T/2 keys
  const double head = 2.0 * c.vocab * C;
  const int lowest = lowest_backward_layer(mask);
  const bool head_trains = c.tied_embeddings ? mask.embedding : mask.head;
  double flops = head + head + (head_trains ? head : 0.0);
  for (int l = 0; l < c.n_layers; l++) {
    flops += 2 * matrix_params + attention;                          // forward
    if (l >= lowest) flops += 2 * matrix_params + 2 * attention;     // input gradients
    if (mask.layers[l]) flops += 2 * matrix_params;                  // weight gradients
  }
  return flops;
}

}  // namespace owlore
