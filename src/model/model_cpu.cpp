#include "model/model_cpu.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "base/error.h"
#include "base/rng.h"
#include "kernels/ref/ops_ref.h"

namespace owlore {

template <typename Real>
double CpuModel<Real>::forward(const Real* w, const int32_t* inputs, const int32_t* targets, int B, int T,
                               int64_t* kept) {
  const ModelConfig& cfg = layout_.config;
  const int C = cfg.d_model, F = cfg.ffn, V = cfg.vocab, Hq = cfg.n_heads, Hkv = cfg.n_kv_heads, hd = cfg.head_dim;
  const int qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
  const int64_t N = (int64_t)B * T;
  B_ = B;
  T_ = T;
  inputs_.assign(inputs, inputs + N);
  targets_.assign(targets, targets + N);
  for (int64_t i = 0; i < N; i++) {
    OWLORE_REQUIRE(inputs[i] >= 0 && inputs[i] < V, "input token ", inputs[i], " at position ", i,
                   " is outside the vocabulary (", V, ")");
    OWLORE_REQUIRE(targets[i] < V, "target token ", targets[i], " at position ", i, " is outside the vocabulary (",
                   V, ")");
  }
  acts_.resize(cfg.n_layers);

  std::vector<Real> x(N * C);
  encoder_forward_ref(x.data(), inputs, w + layout_.embedding, (int)N, C, V);
  for (int l = 0; l < cfg.n_layers; l++) {
    const LayerOffsets& p = layout_.layers[l];
    LayerActivations& a = acts_[l];
    a.x_in = x;
    a.ln1.resize(N * C), a.rstd1.resize(N), a.qkv.resize(N * qkv_dim), a.att.resize(N * cfg.q_dim());
    a.lse.resize((int64_t)B * Hq * T), a.x_mid.resize(N * C), a.ln2.resize(N * C), a.rstd2.resize(N);
    a.gate_up.resize(N * 2 * F), a.h.resize(N * F);
    std::vector<Real> proj(N * C);

    rmsnorm_forward_ref(a.ln1.data(), a.rstd1.data(), a.x_in.data(), w + p.attn_norm, (int)N, C, (Real)cfg.norm_eps);
    matmul_forward_ref(a.qkv.data(), a.ln1.data(), w + p.wqkv, (int)N, C, qkv_dim);
    rope_forward_ref(a.qkv.data(), a.qkv.data(), B, T, Hq + Hkv, hd, qkv_dim, inv_freq_.data(), 0);
    attention_forward_ref(a.att.data(), a.lse.data(), a.qkv.data(), B, T, Hq, Hkv, hd);
    matmul_forward_ref(proj.data(), a.att.data(), w + p.wo, (int)N, cfg.q_dim(), C);
    residual_forward_ref(a.x_mid.data(), a.x_in.data(), proj.data(), N * C);

    rmsnorm_forward_ref(a.ln2.data(), a.rstd2.data(), a.x_mid.data(), w + p.mlp_norm, (int)N, C, (Real)cfg.norm_eps);
    matmul_forward_ref(a.gate_up.data(), a.ln2.data(), w + p.wgate_up, (int)N, C, 2 * F);
    swiglu_forward_ref(a.h.data(), a.gate_up.data(), (int)N, F);
    matmul_forward_ref(proj.data(), a.h.data(), w + p.wdown, (int)N, F, C);
    residual_forward_ref(x.data(), a.x_mid.data(), proj.data(), N * C);
  }
  x_final_ = x;
  ln_f_.resize(N * C);
  rstd_f_.resize(N);
  rmsnorm_forward_ref(ln_f_.data(), rstd_f_.data(), x_final_.data(), w + layout_.final_norm, (int)N, C,
                      (Real)cfg.norm_eps);
  std::vector<Real> losses(N);
  lm_head_ce_forward_ref(losses.data(), ln_f_.data(), w + layout_.lm_head, targets, (int)N, C, V);
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; i++)
    if (targets[i] >= 0) sum += losses[i], count++;
  if (kept) *kept = count;
  return sum;
}

template <typename Real>
void CpuModel<Real>::backward(Real* g, const Real* w, const TrainMask& mask, Real loss_scale) {
  const ModelConfig& cfg = layout_.config;
  OWLORE_REQUIRE(!acts_.empty() && B_ > 0, "CpuModel::backward called before forward");
  OWLORE_REQUIRE((int)mask.layers.size() == cfg.n_layers, "train mask has ", mask.layers.size(), " layers, model has ",
                 cfg.n_layers);
  const int C = cfg.d_model, F = cfg.ffn, V = cfg.vocab, Hq = cfg.n_heads, Hkv = cfg.n_kv_heads, hd = cfg.head_dim;
  const int qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
  const int B = B_, T = T_;
  const int64_t N = (int64_t)B * T;
  // A tied head is the embedding matrix: it trains exactly when the embedding does.
  const bool train_head_matrix = cfg.tied_embeddings ? mask.embedding : mask.head;
  const int lowest_needed = lowest_backward_layer(mask);

  std::vector<Real> dx(N * C), dln(N * C);  // dx: the residual stream's gradient, added to by each norm
  lm_head_ce_backward_ref(dln.data(), train_head_matrix ? g + layout_.lm_head : nullptr, ln_f_.data(),
                          w + layout_.lm_head, targets_.data(), loss_scale, (int)N, C, V);
  rmsnorm_backward_ref(dx.data(), mask.head ? g + layout_.final_norm : nullptr, dln.data(), x_final_.data(),
                       w + layout_.final_norm, rstd_f_.data(), (int)N, C);

  std::vector<Real> dh(N * F), dgate_up(N * 2 * F), datt(N * cfg.q_dim()), dqkv(N * qkv_dim);
  for (int l = cfg.n_layers - 1; l >= lowest_needed; l--) {
    const LayerOffsets& p = layout_.layers[l];
    const LayerActivations& a = acts_[l];
    const bool train = mask.layers[l];
    auto grad = [&](int64_t offset) { return train ? g + offset : nullptr; };
    // MLP half: x_out = x_mid + swiglu(rmsnorm(x_mid) Wgate_up^T) Wdown^T
    matmul_backward_ref(dh.data(), grad(p.wdown), dx.data(), a.h.data(), w + p.wdown, (int)N, F, C);
    swiglu_backward_ref(dgate_up.data(), dh.data(), a.gate_up.data(), (int)N, F);
    matmul_backward_ref(dln.data(), grad(p.wgate_up), dgate_up.data(), a.ln2.data(), w + p.wgate_up, (int)N, C, 2 * F);
    rmsnorm_backward_ref(dx.data(), grad(p.mlp_norm), dln.data(), a.x_mid.data(), w + p.mlp_norm, a.rstd2.data(),
                         (int)N, C);
    // Attention half: x_mid = x_in + attention(rope(rmsnorm(x_in) Wqkv^T)) Wo^T
    matmul_backward_ref(datt.data(), grad(p.wo), dx.data(), a.att.data(), w + p.wo, (int)N, cfg.q_dim(), C);
    attention_backward_ref(dqkv.data(), datt.data(), a.qkv.data(), a.att.data(), a.lse.data(), B, T, Hq, Hkv, hd);
    rope_backward_ref(dqkv.data(), dqkv.data(), B, T, Hq + Hkv, hd, qkv_dim, inv_freq_.data(), 0);
    matmul_backward_ref(dln.data(), grad(p.wqkv), dqkv.data(), a.ln1.data(), w + p.wqkv, (int)N, C, qkv_dim);
    rmsnorm_backward_ref(dx.data(), grad(p.attn_norm), dln.data(), a.x_in.data(), w + p.attn_norm, a.rstd1.data(),
                         (int)N, C);
  }
  if (mask.embedding) encoder_backward_ref(g + layout_.embedding, dx.data(), inputs_.data(), (int)N, C, V);
}

template <typename Real>
std::vector<Real> CpuModel<Real>::last_logits(const Real* w) const {
  const ModelConfig& cfg = layout_.config;
  const int C = cfg.d_model, V = cfg.vocab;
  std::vector<Real> logits((int64_t)B_ * V);
  for (int b = 0; b < B_; b++) {
    const Real* x = ln_f_.data() + ((int64_t)b * T_ + T_ - 1) * C;
    matmul_forward_ref(logits.data() + (int64_t)b * V, x, w + layout_.lm_head, 1, C, V);
  }
  return logits;
}

template <typename Real>
std::vector<Real> CpuModel<Real>::all_logits(const Real* w) const {
  const ModelConfig& cfg = layout_.config;
  const int64_t N = (int64_t)B_ * T_;
  std::vector<Real> logits(N * cfg.vocab);
  matmul_forward_ref(logits.data(), ln_f_.data(), w + layout_.lm_head, (int)N, cfg.d_model, cfg.vocab);
  return logits;
}

template <typename Real>
const std::vector<Real>& CpuModel<Real>::matrix_input(int layer, MatrixInput which) const {
  OWLORE_REQUIRE(layer >= 0 && layer < (int)acts_.size(), "CpuModel::matrix_input: layer ", layer,
                 " has no saved activations (run forward first; the model has ", layout_.config.n_layers, " layers)");
  const LayerActivations& a = acts_[layer];
  switch (which) {
    case MatrixInput::qkv: return a.ln1;
    case MatrixInput::o: return a.att;
    case MatrixInput::gate_up: return a.ln2;
    case MatrixInput::down: return a.h;
  }
  fail("CpuModel::matrix_input: unknown matrix input ", (int)which);
}

template <typename Real>
void init_weights(const ModelLayout& layout, Real* weights, uint64_t seed) {
  // Each block of 2^22 elements of each tensor has its own stream, seeded by (seed, tensor,
  // block): the result does not depend on the number of threads, and a 7B model (6.7e9
  // normal draws, about two minutes on one core) initializes on every core of the machine.
  constexpr int64_t kBlock = int64_t(1) << 22;
  struct Block {
    const TensorSlot* tensor;
    int64_t index, begin, end;
  };
  std::vector<Block> blocks;
  for (size_t t = 0; t < layout.tensors.size(); t++)
    for (int64_t b = 0; b < layout.tensors[t].numel(); b += kBlock)
      blocks.push_back({&layout.tensors[t], (int64_t)t, b, std::min(b + kBlock, layout.tensors[t].numel())});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < blocks.size();) {
      const Block& b = blocks[i];
      Real* p = weights + b.tensor->offset;
      if (!b.tensor->is_matrix()) {
        std::fill(p + b.begin, p + b.end, Real(1));
        continue;
      }
      Rng rng(seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)b.index << 32) ^ (uint64_t)(b.begin / kBlock));
      for (int64_t k = b.begin; k < b.end; k++) p[k] = (Real)(0.02 * rng.normal());
    }
  };
  const int64_t total = layout.total;
  const unsigned threads = total < (int64_t(1) << 24) ? 1 : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; i++) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

template class CpuModel<float>;
template class CpuModel<double>;
template void init_weights<float>(const ModelLayout&, float*, uint64_t);
template void init_weights<double>(const ModelLayout&, double*, uint64_t);

}  // namespace owlore
