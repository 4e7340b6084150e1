// The FLOP count behind the reported MFU: only the work the method must do (DESIGN.md, README).
// Per token, with T the sequence length, P_l the matrix parameters of layer l, causal attention
// (each query sees T/2 keys on average):
//   forward         2 P_l + 2 T q_dim per layer, + 2 V C for the LM head
//   input grads     the same again for every layer the backward passes through (attention: twice
//                   its forward, for dS·K and dSᵀ·Q beside dP = dO·Vᵀ and dV = Pᵀ·dO), + 2 V C
//   weight grads    2 P_l only for trained layers, + 2 V C if the head trains
// Norms, RoPE, SwiGLU, softmax and the optimizer are not counted (memory-bound, < 1%).
#pragma once
#include "model/config.h"
#include "model/train_mask.h"

namespace owlore {

// Peak dense bf16 rate of an H100/H200 SXM from the datasheet, the MFU denominator.
constexpr double kDatasheetBf16Flops = 989e12;

double training_flops_per_token(const ModelConfig& config, const TrainMask& mask, int seq);

}  // namespace owlore
