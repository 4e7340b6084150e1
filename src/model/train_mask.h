// Which parameters receive gradients, shared by the training loop, both backends, the CPU and
// GPU models and the FLOP count. A frozen decoder layer gets no weight-gradient work at all; if
// nothing below a layer trains (frozen embedding), the backward stops there.
#pragma once
#include <vector>

#include "model/layout.h"

namespace owlore {

struct TrainMask {
  std::vector<bool> layers;   // per decoder layer
  bool embedding = true;      // token embedding (and the head, when tied)
  bool head = true;           // LM head (untied) and final norm
  static TrainMask all(int n_layers) { return TrainMask{std::vector<bool>(n_layers, true), true, true}; }
};

// Whether tensor t trains under mask (the tied head trains with the embedding).
inline bool tensor_trains(const ModelLayout& layout, const TensorSlot& t, const TrainMask& mask) {
  if (t.layer >= 0) return mask.layers[t.layer];
  if (t.offset == layout.embedding) return mask.embedding;
  return mask.head;  // final norm and untied head
}

// The lowest decoder layer the backward must reach: 0 when the embedding trains (its gradient
// needs every layer's input gradient), else the lowest trained layer (n_layers when none trains:
// the backward then ends at the final norm).
inline int lowest_backward_layer(const TrainMask& mask) {
  if (mask.embedding) return 0;
  for (int l = 0; l < (int)mask.layers.size(); l++)
    if (mask.layers[l]) return l;
  return (int)mask.layers.size();
}

}  // namespace owlore
