// GPU forward/backward orchestration: the one translation unit that includes every kernel
// header (compile time on small machines: keep heavy templates in few TUs).
#include "base/format.h"
#include "model/model_gpu.h"

#include <cmath>

#include "base/error.h"
#include "kernels/attention.cuh"
#include "kernels/encoder.cuh"
#include "kernels/lm_head_ce.cuh"
#include "kernels/matmul.cuh"
#include "kernels/outliers.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

namespace owlore {

std::string gpu_unsupported_reason(const ModelConfig& c) {
  if (c.head_dim == 64 || c.head_dim == 128) return "";
  return "the GPU attention kernel supports head_dim 64 and 128; model '" + c.name + "' has " +
         std::to_string(c.head_dim);
}

bool cuda_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::string cuda_device_name() {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no CUDA device";
  return prop.name;
}

namespace {
// bf16 <-> fp32 on the host (round to nearest even), for weight upload and download.
__global__ void float_to_bf16_kernel(bf16* out, const float* in, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}
constexpr int64_t kStagingFloats = 16ll << 20;  // the weight staging buffer (64 MiB of fp32)

__global__ void bf16_to_float_kernel(float* out, const bf16* in, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(in[i]);
}
}  // namespace

int64_t streamed_gradient_floats(const ModelConfig& c) {
  const int64_t C = c.d_model;
  return std::max({(int64_t)c.q_dim() * C, (int64_t)c.kv_dim() * C, (int64_t)c.ffn * C});
}

GradTargets arena_grad_targets(const ModelLayout& layout, float* grads) {
  GradTargets g;
  g.embedding = grads + layout.embedding;
  g.final_norm = grads + layout.final_norm;
  g.lm_head = layout.config.tied_embeddings ? nullptr : grads + layout.lm_head;
  for (const LayerOffsets& p : layout.layers) g.layer.push_back(grads + p.begin);
  return g;
}

struct GpuModel::Impl {
  const ModelLayout& layout;
  GpuModelOptions opt;
  cudaStream_t stream = nullptr;
  std::unique_ptr<Matmul> matmul;
  int N = 0;  // max tokens per micro-batch

  // plan indices, resolved to pointers in bind()
  struct LayerBuffers {
    int x_in, ln1, rstd1, qkv, att, lse, x_mid, ln2, rstd2, gate_up, h;
  };
  int i_weights, i_x_final, i_ln_f, i_rstd_f, i_losses, i_inputs, i_targets;
  int i_dx, i_dln = -1, i_energy_partials = -1, i_datt, i_dqkv, i_proj = -1, i_matrix_ws = -1;
  int i_lm_ws, i_enc_ws, i_rms_scratch, i_attn_ws, i_upload, i_gemm_ws, i_inv_freq;
  int64_t staging_floats = 0;  // weight upload/download chunk
  int i_input_ring = -1;  // offload_layer_inputs: the two layer-input buffers on the GPU
  // d attention and d qkv take the buffers of swiglu out and gate_up when they fit (they always
  // do for LLaMA shapes: q_dim <= F, q_dim + 2 kv_dim <= 2F); see the backward.
  bool d_in_mlp_buffers = false;
  int i_ln_scratch = -1, i_h_scratch = -1, i_rstd_scratch = -1;  // Recompute::cheap
  // Recompute::layer: the final x and norm, the projections' outputs and d norm out live in the
  // recompute buffers (see the constructor), and with streamed gradients so do the weight
  // gradients (gradients_in_recompute; the trained layers then recompute their attention twice).
  bool final_in_recompute = false, scratch_in_recompute = false, gradients_in_recompute = false;
  std::vector<LayerBuffers> idx;
  size_t lm_ws_bytes = 0, enc_ws_bytes = 0;

  struct LayerPtrs {
    bf16 *x_in, *ln1, *qkv, *att, *x_mid, *ln2, *gate_up, *h;
    float *rstd1, *lse, *rstd2;
  };
  std::vector<LayerPtrs> act;
  bf16 *weights, *x_final, *ln_f, *dx, *dln, *energy_partials = nullptr, *datt, *dqkv, *lm_ws;
  bf16 *attn_proj, *mlp_proj;  // the outputs of the attention's and the MLP's last projection
  float *rstd_f, *losses, *rms_scratch, *attn_ws, *upload, *rstd_scratch = nullptr;
  float* inv_freq;  // RoPE frequencies (head_dim/2), rope_inv_freq() of the config
  void* gemm_ws = nullptr;     // cuBLASLt's, shared by the GEMMs on stream
  float* matrix_ws = nullptr;  // streamed weight gradients (one matrix at a time) and the optimizer's scratch
  int *inputs, *targets;
  void* enc_ws;
  std::vector<float> losses_host;

  // Offloaded layer inputs: layer l's input lives in ring slot l % 2 on the GPU while it is
  // written or used, and in host_inputs[l] (pinned, (n_layers, N, C)) in between. copied[slot] is
  // recorded on copy_stream after each copy into or out of the slot; compute_point marks, on the
  // compute stream, what a copy must wait for.
  bool offload = false;
  bf16* host_inputs = nullptr;
  cudaStream_t copy_stream = nullptr;
  cudaEvent_t copied[2] = {nullptr, nullptr}, compute_point = nullptr;

  explicit Impl(const ModelLayout& l) : layout(l) {}
  ~Impl();
  const bf16* w(int64_t offset) const { return weights + offset; }
};

GpuModel::GpuModel(const ModelLayout& layout, const GpuModelOptions& options, MemoryPlan& plan)
    : layout_(layout), impl_(std::make_unique<Impl>(layout)) {
  Impl& m = *impl_;
  m.opt = options;
  const ModelConfig& c = layout.config;
  const std::string unsupported = gpu_unsupported_reason(c);
  OWLORE_REQUIRE(unsupported.empty(), unsupported, " (use --device cpu)");
  // The CUDA context reserves cudaLimitStackSize (1 KiB by default) of local memory for every
  // thread the card can hold: 264 MiB on a 132-SM H100/H200. A run needs 128 bytes: owlore's
  // kernels use at most 80, cuBLASLt's fp32 GEMMs (GaLore) 128 (tools/bench/probe_memory.cu). Setting
  // that here reserves it before the plan is allocated, rather than when the first such kernel
  // launches mid-step; the driver still grows it for a kernel that needs more.
  CUDA_CHECK(cudaDeviceSetLimit(cudaLimitStackSize, 128));
  const int64_t N = (int64_t)options.max_batch * options.seq;
  OWLORE_REQUIRE(N < (1ll << 31), "batch x seq = ", N, " tokens is too many for one micro-batch");
  m.N = (int)N;
  const int C = c.d_model, F = c.ffn, V = c.vocab, qkv_dim = c.q_dim() + 2 * c.kv_dim();
  const size_t bf = sizeof(bf16), f4 = sizeof(float);
  const bool cheap = options.recompute != Recompute::none, whole = options.recompute == Recompute::layer;
  OWLORE_REQUIRE(!options.offload_layer_inputs || whole,
                 "offloading the layer inputs needs --recompute layer: under the other levels the inputs are a small part "
                 "of what the GPU keeps per layer");
  m.i_weights = plan.add(Arena::Weights, "weights", layout.total * bf, "bf16");
  m.i_inv_freq = plan.add(Arena::Weights, "RoPE frequencies", c.head_dim / 2 * f4, "fp32");
  m.offload = options.offload_layer_inputs;
  if (m.offload)
    m.i_input_ring = plan.add(Arena::Activations, "layer inputs (ring of 2)", 2 * N * C * bf, "bf16");
  if (cheap) {  // one buffer each, shared by every layer: recomputed when the backward needs them
    m.i_ln_scratch = plan.add(Arena::Workspace, "norm out (recomputed)", N * C * bf, "bf16");
    m.i_h_scratch = plan.add(Arena::Workspace, "swiglu out (recomputed)", N * F * bf, "bf16");
    m.i_rstd_scratch = plan.add(Arena::Workspace, "rstd (recomputed)", N * f4, "fp32");
  }
  // Recompute::layer: one set of the per-layer buffers, shared, rewritten by each layer.
  Impl::LayerBuffers shared{};
  if (whole) {
    shared.rstd1 = plan.add(Arena::Workspace, "rstd1 (recomputed)", N * f4, "fp32");
    // qkv and the attention output in one buffer, the attention output after qkv (bind()).
    shared.qkv = shared.att =
        plan.add(Arena::Workspace, "qkv, attention (recomputed)", N * (qkv_dim + c.q_dim()) * bf, "bf16");
    shared.lse = plan.add(Arena::Workspace, "lse (recomputed)", N * c.n_heads * f4, "fp32");
    shared.x_mid = plan.add(Arena::Workspace, "x_mid (recomputed)", N * C * bf, "bf16");
    shared.rstd2 = plan.add(Arena::Workspace, "rstd2 (recomputed)", N * f4, "fp32");
    shared.gate_up = plan.add(Arena::Workspace, "gate_up (recomputed)", N * 2 * F * bf, "bf16");
  }
  for (int l = 0; l < c.n_layers; l++) {
    const std::string p = "layer " + std::to_string(l) + " ";
    auto keep = [&](int shared_index, const char* name, size_t bytes, const char* dtype) {
      return whole ? shared_index : plan.add(Arena::Activations, p + name, bytes, dtype);
    };
    Impl::LayerBuffers b;
    b.x_in = options.offload_layer_inputs ? -1 : plan.add(Arena::Activations, p + "x", N * C * bf, "bf16");
    b.ln1 = cheap ? m.i_ln_scratch : plan.add(Arena::Activations, p + "ln1", N * C * bf, "bf16");
    b.rstd1 = keep(shared.rstd1, "rstd1", N * f4, "fp32");
    b.qkv = keep(shared.qkv, "qkv", N * qkv_dim * bf, "bf16");
    b.att = keep(shared.att, "attention", N * c.q_dim() * bf, "bf16");
    b.lse = keep(shared.lse, "lse", N * c.n_heads * f4, "fp32");
    b.x_mid = keep(shared.x_mid, "x_mid", N * C * bf, "bf16");
    b.ln2 = cheap ? m.i_ln_scratch : plan.add(Arena::Activations, p + "ln2", N * C * bf, "bf16");
    b.rstd2 = keep(shared.rstd2, "rstd2", N * f4, "fp32");
    b.gate_up = keep(shared.gate_up, "gate_up", N * 2 * F * bf, "bf16");
    b.h = cheap ? m.i_h_scratch : plan.add(Arena::Activations, p + "swiglu", N * F * bf, "bf16");
    m.idx.push_back(b);
  }
  // Under Recompute::layer, buffers whose lifetimes fall between the recompute buffers' uses
  // take those buffers instead of their own:
  //  - the final x and norm (from the last layer's forward to the final norm's backward) take
  //    the qkv/attention buffer;
  //  - the attention projection's output is written into the SwiGLU buffer before swiglu out is,
  //    and the MLP projection's into the gate_up buffer after swiglu has read it;
  //  - d norm out (the LM head's and each half-layer's input gradient) takes the SwiGLU buffer,
  //    whose contents (d swiglu, d attention) are dead when it is written.
  const size_t attn_region_bytes = whole ? (size_t)N * (qkv_dim + c.q_dim()) * bf : 0;
  const size_t gate_up_region_bytes = (size_t)N * 2 * F * bf, h_region_bytes = (size_t)N * F * bf;
  m.final_in_recompute = whole && 2 * (size_t)N * C * bf <= attn_region_bytes;
  m.scratch_in_recompute = whole && F >= C;
  m.i_x_final = m.final_in_recompute ? shared.qkv : plan.add(Arena::Activations, "final x", N * C * bf, "bf16");
  m.i_ln_f = m.final_in_recompute ? shared.qkv : plan.add(Arena::Activations, "final norm", N * C * bf, "bf16");
  m.i_rstd_f = plan.add(Arena::Activations, "final rstd", N * f4, "fp32");
  m.i_losses = plan.add(Arena::Activations, "losses", N * f4, "fp32");
  m.i_inputs = plan.add(Arena::Activations, "input tokens", N * sizeof(int), "int32");
  m.i_targets = plan.add(Arena::Activations, "targets", N * sizeof(int), "int32");
  // Backward scratch: reused by every layer.
  // (The norms' backward adds into d residual: no buffer for their input gradient.)
  m.i_dx = plan.add(Arena::Workspace, "d residual", N * C * bf, "bf16");
  if (!m.scratch_in_recompute) {
    m.i_dln = plan.add(Arena::Workspace, "d norm out", N * C * bf, "bf16");
    m.i_proj = plan.add(Arena::Workspace, "projection out", N * C * bf, "bf16");
  }
  // d swiglu and d gate_up take the buffers of swiglu out and gate_up, which the layer's backward
  // no longer needs once they are read (matmul computes dW before dinp; swiglu_backward runs in
  // place). Outlier calibration (Recompute::none only) still needs a scratch of d gate_up's size.
  m.i_energy_partials = options.recompute == Recompute::none
                     ? plan.add(Arena::Workspace, "input energy partials", N * 2 * F * bf, "bf16")
                     : -1;
  // d attention and d qkv are written after the layer's MLP backward, when swiglu out and gate_up
  // (whose buffers d swiglu and d gate_up took) are no longer read: they take those buffers too.
  m.d_in_mlp_buffers = c.q_dim() <= F && qkv_dim <= 2 * F;
  m.i_datt = m.d_in_mlp_buffers ? -1 : plan.add(Arena::Workspace, "d attention", N * c.q_dim() * bf, "bf16");
  m.i_dqkv = m.d_in_mlp_buffers ? -1 : plan.add(Arena::Workspace, "d qkv", N * qkv_dim * bf, "bf16");
  // Streamed weight gradients (GradTargets::consume): one matrix at a time, so the workspace is
  // the largest matrix, not the largest fused GEMM. Under Recompute::layer they go where the
  // recompute buffers are free when each is written: the MLP's three into the qkv/attention
  // buffer (a trained layer drops its recomputed attention for them and recomputes it after its
  // MLP's backward: one more qkv GEMM and attention forward for each trained layer only), the
  // attention projection's into the gate_up buffer before d qkv is written there, q's, k's and
  // v's into the SwiGLU buffer after d attention is read. Between steps the qkv/attention buffer
  // is the optimizer's scratch.
  if (options.stream_matrix_gradients) {
    const size_t largest = (size_t)streamed_gradient_floats(c) * f4;
    m.gradients_in_recompute = m.scratch_in_recompute && m.d_in_mlp_buffers && largest <= attn_region_bytes &&
                               (size_t)C * c.q_dim() * f4 <= gate_up_region_bytes &&
                               (size_t)C * std::max(c.q_dim(), c.kv_dim()) * f4 <= h_region_bytes;
    if (!m.gradients_in_recompute)
      m.i_matrix_ws = plan.add(Arena::Workspace, "streamed weight gradient (largest matrix)", largest, "fp32");
  }
  const int chunk = std::max(1, std::min<int>(options.lm_head_chunk_tokens, (int)N));
  m.opt.lm_head_chunk_tokens = chunk;
  m.lm_ws_bytes = lm_head_ce_workspace_bytes(chunk, V);
  // Under Recompute::layer the shared gate_up is free between the forward's last layer and the
  // backward's first recompute, when the LM head runs, and between steps, when weights are
  // staged: the logits chunk and the staging buffer take it when they fit.
  const size_t gate_up_bytes = (size_t)N * 2 * F * bf;
  m.i_lm_ws = whole && m.lm_ws_bytes <= gate_up_bytes
                  ? shared.gate_up
                  : plan.add(Arena::Workspace, "lm head logits chunk", m.lm_ws_bytes, "bf16");
  m.enc_ws_bytes = encoder_backward_workspace_bytes((int)N, V);
  m.i_enc_ws = plan.add(Arena::Workspace, "embedding backward sort", m.enc_ws_bytes, "int32");
  m.i_rms_scratch = plan.add(Arena::Workspace, "rmsnorm dweight partials", rmsnorm_backward_scratch_floats((int)N, C) * f4,
                             "fp32");
  m.i_gemm_ws = plan.add(Arena::Workspace, "cuBLASLt workspace (every GEMM on the stream)", CachedGemm::kWorkspaceBytes,
                         "bytes");
  m.i_attn_ws = plan.add(Arena::Workspace, "attention backward D",
                         attention_backward_workspace_bytes(options.max_batch, options.seq, c.n_heads), "fp32");
  // Weight upload/download goes through a fixed fp32 staging buffer, chunk by chunk of the
  // (contiguous) arena: 64 MiB, not the largest tensor (500 MiB for a 7B model's embedding);
  // under Recompute::layer, the shared gate_up buffer, in chunks of its size.
  m.staging_floats = std::min<int64_t>(layout.total, kStagingFloats);
  if (whole) m.staging_floats = std::min<int64_t>(m.staging_floats, gate_up_bytes / f4);
  m.i_upload = whole ? shared.gate_up : plan.add(Arena::Workspace, "weight staging", m.staging_floats * f4, "fp32");
  // The stream exists from construction (last, after every check that may throw), so whatever a
  // caller builds on it before bind() — the GaLore optimizer's solver and GEMM handles — is
  // ordered with the model's kernels. A non-blocking stream does not wait for the legacy default
  // stream, so work enqueued there would race with the backward.
  CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  if (m.offload) {
    const size_t host_bytes = pinned_host_bytes();
    if (cudaHostAlloc(&m.host_inputs, host_bytes, cudaHostAllocDefault) != cudaSuccess) {
      m.host_inputs = nullptr;
      cudaGetLastError();  // clear it, so that a later check does not report it against another call
      fail("cannot pin ", format_bytes((double)host_bytes), " of host memory for the offloaded layer inputs");
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&m.copy_stream, cudaStreamNonBlocking));
    for (cudaEvent_t* e : {&m.copied[0], &m.copied[1], &m.compute_point})
      CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  }
}

// Frees what the constructor made, also when it throws halfway (impl_ is then destroyed alone).
GpuModel::Impl::~Impl() {
  if (copy_stream) cudaStreamSynchronize(copy_stream), cudaStreamDestroy(copy_stream);
  for (cudaEvent_t e : {copied[0], copied[1], compute_point})
    if (e) cudaEventDestroy(e);
  if (host_inputs) cudaFreeHost(host_inputs);
  if (stream) cudaStreamDestroy(stream);
}

GpuModel::~GpuModel() = default;

size_t GpuModel::pinned_host_bytes() const {
  return impl_->offload ? (size_t)layout_.config.n_layers * impl_->N * layout_.config.d_model * sizeof(bf16) : 0;
}

void GpuModel::bind(const MemoryPlan& plan) {
  Impl& m = *impl_;
  m.matmul = std::make_unique<Matmul>(plan.ptr(m.i_gemm_ws));
  m.gemm_ws = plan.ptr(m.i_gemm_ws);
  m.weights = plan.as<bf16>(m.i_weights);
  const bool whole = m.opt.recompute == Recompute::layer;
  const int qkv_dim = layout_.config.q_dim() + 2 * layout_.config.kv_dim();
  for (size_t l = 0; l < m.idx.size(); l++) {
    const Impl::LayerBuffers& b = m.idx[l];
    bf16* x_in = m.offload ? plan.as<bf16>(m.i_input_ring) + (int64_t)(l % 2) * m.N * layout_.config.d_model
                           : plan.as<bf16>(b.x_in);
    bf16* att = whole ? plan.as<bf16>(b.qkv) + (int64_t)m.N * qkv_dim : plan.as<bf16>(b.att);
    m.act.push_back(Impl::LayerPtrs{x_in, plan.as<bf16>(b.ln1), plan.as<bf16>(b.qkv),
                                    att, plan.as<bf16>(b.x_mid), plan.as<bf16>(b.ln2),
                                    plan.as<bf16>(b.gate_up), plan.as<bf16>(b.h), plan.as<float>(b.rstd1),
                                    plan.as<float>(b.lse), plan.as<float>(b.rstd2)});
  }
  m.x_final = plan.as<bf16>(m.i_x_final);
  m.ln_f = m.final_in_recompute ? m.x_final + (int64_t)m.N * layout_.config.d_model : plan.as<bf16>(m.i_ln_f);
  m.rstd_f = plan.as<float>(m.i_rstd_f);
  m.losses = plan.as<float>(m.i_losses);
  m.inputs = plan.as<int>(m.i_inputs);
  m.targets = plan.as<int>(m.i_targets);
  m.dx = plan.as<bf16>(m.i_dx);
  // Recompute::layer shares one gate_up and one SwiGLU buffer among the layers (act[0]'s).
  m.dln = m.scratch_in_recompute ? m.act[0].h : plan.as<bf16>(m.i_dln);
  m.attn_proj = m.scratch_in_recompute ? m.act[0].h : plan.as<bf16>(m.i_proj);
  m.mlp_proj = m.scratch_in_recompute ? m.act[0].gate_up : plan.as<bf16>(m.i_proj);
  if (m.gradients_in_recompute) m.matrix_ws = reinterpret_cast<float*>(m.act[0].qkv);
  else if (m.i_matrix_ws >= 0) m.matrix_ws = plan.as<float>(m.i_matrix_ws);
  if (m.i_energy_partials >= 0) m.energy_partials = plan.as<bf16>(m.i_energy_partials);
  m.datt = m.d_in_mlp_buffers ? nullptr : plan.as<bf16>(m.i_datt);
  m.dqkv = m.d_in_mlp_buffers ? nullptr : plan.as<bf16>(m.i_dqkv);
  m.lm_ws = plan.as<bf16>(m.i_lm_ws);
  m.enc_ws = plan.ptr(m.i_enc_ws);
  m.rms_scratch = plan.as<float>(m.i_rms_scratch);
  m.attn_ws = plan.as<float>(m.i_attn_ws);
  m.upload = plan.as<float>(m.i_upload);
  if (m.i_rstd_scratch >= 0) m.rstd_scratch = plan.as<float>(m.i_rstd_scratch);
  m.losses_host.resize(m.N);
  m.inv_freq = plan.as<float>(m.i_inv_freq);
  const std::vector<double> inv_freq = rope_inv_freq(layout_.config);
  const std::vector<float> inv_freq_f(inv_freq.begin(), inv_freq.end());
  CUDA_CHECK(cudaMemcpy(m.inv_freq, inv_freq_f.data(), inv_freq_f.size() * sizeof(float), cudaMemcpyHostToDevice));
}

cudaStream_t GpuModel::stream() const { return impl_->stream; }
const std::vector<float>& GpuModel::last_token_losses() const { return impl_->losses_host; }
void* GpuModel::weights_device() { return impl_->weights; }
float* GpuModel::matrix_workspace() { return impl_->matrix_ws; }
void* GpuModel::gemm_workspace() { return impl_->gemm_ws; }

void GpuModel::upload_weights(const float* host) {
  Impl& m = *impl_;
  for (int64_t begin = 0; begin < layout_.total; begin += m.staging_floats) {
    const int64_t n = std::min(m.staging_floats, layout_.total - begin);
    CUDA_CHECK(cudaMemcpyAsync(m.upload, host + begin, n * sizeof(float), cudaMemcpyHostToDevice, m.stream));
    float_to_bf16_kernel<<<ceil_div(n, 256), 256, 0, m.stream>>>(m.weights + begin, m.upload, n);
    CUDA_CHECK_LAUNCH();
  }
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void GpuModel::download_weights(float* host) const {
  Impl& m = *impl_;
  for (int64_t begin = 0; begin < layout_.total; begin += m.staging_floats) {
    const int64_t n = std::min(m.staging_floats, layout_.total - begin);
    bf16_to_float_kernel<<<ceil_div(n, 256), 256, 0, m.stream>>>(m.upload, m.weights + begin, n);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpyAsync(host + begin, m.upload, n * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
    CUDA_CHECK(cudaStreamSynchronize(m.stream));
  }
}

namespace {

// Layer l's attention from ln1 = rmsnorm(x_in): qkv (with RoPE), the attention output and lse.
void forward_attention(GpuModel::Impl& m, int l, int B) {
  const ModelConfig& c = m.layout.config;
  const int T = m.opt.seq, N = B * T;
  const int Hq = c.n_heads, Hkv = c.n_kv_heads, hd = c.head_dim, qkv_dim = c.q_dim() + 2 * c.kv_dim();
  GpuModel::Impl::LayerPtrs& a = m.act[l];
  m.matmul->forward(a.qkv, a.ln1, m.w(m.layout.layers[l].wqkv), N, c.d_model, qkv_dim, m.stream);
  rope_forward(a.qkv, a.qkv, B, T, Hq + Hkv, hd, qkv_dim, m.inv_freq, 0, m.stream);
  attention_forward(a.att, a.lse, a.qkv, B, T, Hq, Hkv, hd, m.stream);
}

// Layer l from its input x_in and ln1 = rmsnorm(x_in) up to h = swiglu(ln2 Wgate_up^T): all of
// the layer but its last projection and residual (the forward fuses those into the next norm).
void forward_layer_body(GpuModel::Impl& m, int l, int B) {
  const ModelConfig& c = m.layout.config;
  const int T = m.opt.seq, N = B * T, C = c.d_model, F = c.ffn;
  cudaStream_t s = m.stream;
  Matmul& mm = *m.matmul;
  const LayerOffsets& p = m.layout.layers[l];
  GpuModel::Impl::LayerPtrs& a = m.act[l];
  forward_attention(m, l, B);
  mm.forward(m.attn_proj, a.att, m.w(p.wo), N, c.q_dim(), C, s);
  rmsnorm_residual_forward(a.x_mid, a.ln2, a.rstd2, a.x_in, m.attn_proj, m.w(p.mlp_norm), N, C, c.norm_eps, s);
  mm.forward(a.gate_up, a.ln2, m.w(p.wgate_up), N, C, 2 * F, s);
  swiglu_forward(a.h, a.gate_up, N, F, s);
}

// Offloaded layer inputs (GpuModelOptions::offload_layer_inputs). Before layer l's input is
// written into its ring slot, the slot's last copy (out: layer l-2's input; in: a prefetch) must
// be done. After it is written, it is copied out to the host behind the compute.
void wait_for_input_slot(GpuModel::Impl& m, int l) {
  if (m.offload) CUDA_CHECK(cudaStreamWaitEvent(m.stream, m.copied[l % 2]));
}
// Layer l's input between its ring slot and the host, once the compute enqueued so far is done:
// out (forward) after the input is written; in (backward) after layer l+2's backward, the slot's
// last reader.
void copy_input(GpuModel::Impl& m, int l, int N, cudaMemcpyKind kind) {
  CUDA_CHECK(cudaEventRecord(m.compute_point, m.stream));
  CUDA_CHECK(cudaStreamWaitEvent(m.copy_stream, m.compute_point));
  bf16 *host = m.host_inputs + (int64_t)l * m.N * m.layout.config.d_model, *slot = m.act[l].x_in;
  const size_t bytes = (size_t)N * m.layout.config.d_model * sizeof(bf16);
  const bool out = kind == cudaMemcpyDeviceToHost;
  CUDA_CHECK(cudaMemcpyAsync(out ? host : slot, out ? slot : host, bytes, kind, m.copy_stream));
  CUDA_CHECK(cudaEventRecord(m.copied[l % 2], m.copy_stream));
}

// The forward through the final norm; leaves ln_f ready for the LM head. keep_inputs: a backward
// follows, so offloaded layer inputs are copied out (an evaluation forward skips the copies).
void forward_layers(GpuModel::Impl& m, int B, bool keep_inputs) {
  const ModelConfig& c = m.layout.config;
  const int T = m.opt.seq, N = B * T, C = c.d_model, F = c.ffn, V = c.vocab;
  cudaStream_t s = m.stream;
  Matmul& mm = *m.matmul;
  const bool offload = m.offload && keep_inputs;
  NvtxRange range("forward");
  wait_for_input_slot(m, 0);
  encoder_forward(m.act[0].x_in, m.inputs, m.w(m.layout.embedding), N, C, V, s);
  if (offload) copy_input(m, 0, N, cudaMemcpyDeviceToHost);
  rmsnorm_forward(m.act[0].ln1, m.act[0].rstd1, m.act[0].x_in, m.w(m.layout.layers[0].attn_norm), N, C, c.norm_eps, s);
  for (int l = 0; l < c.n_layers; l++) {
    NvtxRange layer_range(("forward layer " + std::to_string(l)).c_str());
    const LayerOffsets& p = m.layout.layers[l];
    GpuModel::Impl::LayerPtrs& a = m.act[l];
    forward_layer_body(m, l, B);
    mm.forward(m.mlp_proj, a.h, m.w(p.wdown), N, F, C, s);
    if (l + 1 < c.n_layers) {
      GpuModel::Impl::LayerPtrs& next = m.act[l + 1];
      wait_for_input_slot(m, l + 1);
      rmsnorm_residual_forward(next.x_in, next.ln1, next.rstd1, a.x_mid, m.mlp_proj, m.w(m.layout.layers[l + 1].attn_norm),
                               N, C, c.norm_eps, s);
      if (offload) copy_input(m, l + 1, N, cudaMemcpyDeviceToHost);
    } else {
      rmsnorm_residual_forward(m.x_final, m.ln_f, m.rstd_f, a.x_mid, m.mlp_proj, m.w(m.layout.final_norm), N, C, c.norm_eps,
                               s);
    }
  }
}

void upload_batch(GpuModel::Impl& m, const int32_t* inputs, const int32_t* targets, int B) {
  const ModelConfig& c = m.layout.config;
  OWLORE_REQUIRE(B >= 1 && B <= m.opt.max_batch, "GPU model: batch ", B, " exceeds the planned ", m.opt.max_batch);
  const int64_t N = (int64_t)B * m.opt.seq;
  for (int64_t i = 0; i < N; i++) {
    OWLORE_REQUIRE(inputs[i] >= 0 && inputs[i] < c.vocab, "input token ", inputs[i], " at position ", i,
                   " is outside the vocabulary (", c.vocab, ")");
    OWLORE_REQUIRE(targets[i] < c.vocab, "target token ", targets[i], " at position ", i,
                   " is outside the vocabulary (", c.vocab, ")");
  }
  CUDA_CHECK(cudaMemcpyAsync(m.inputs, inputs, N * sizeof(int), cudaMemcpyHostToDevice, m.stream));
  CUDA_CHECK(cudaMemcpyAsync(m.targets, targets, N * sizeof(int), cudaMemcpyHostToDevice, m.stream));
}

double sum_losses(GpuModel::Impl& m, const int32_t* targets, int N, int64_t* kept) {
  CUDA_CHECK(cudaMemcpyAsync(m.losses_host.data(), m.losses, N * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
  double sum = 0;
  int64_t count = 0;
  for (int i = 0; i < N; i++)
    if (targets[i] >= 0) sum += m.losses_host[i], count++;
  if (kept) *kept = count;
  return sum;
}

}  // namespace

double GpuModel::forward_loss(const int32_t* inputs, const int32_t* targets, int B, int64_t* kept) {
  Impl& m = *impl_;
  const ModelConfig& c = layout_.config;
  const int N = B * m.opt.seq;
  upload_batch(m, inputs, targets, B);
  forward_layers(m, B, /*keep_inputs=*/false);
  lm_head_ce_forward(m.losses, m.lm_ws, m.lm_ws_bytes, m.ln_f, m.w(layout_.lm_head), m.targets, N, c.d_model, c.vocab,
                     m.opt.lm_head_chunk_tokens, *m.matmul, m.stream);
  return sum_losses(m, targets, N, kept);
}

void GpuModel::accumulate_input_energy(const std::vector<float*>& qkv, const std::vector<float*>& o,
                                       const std::vector<float*>& gate_up, const std::vector<float*>& down, int B) {
  // The inputs are read from the per-layer activations, which the recompute levels share.
  OWLORE_REQUIRE(impl_->opt.recompute == Recompute::none,
                 "accumulate_input_energy needs every layer's activations kept (Recompute::none)");
  Impl& m = *impl_;
  const ModelConfig& c = layout_.config;
  const size_t L = (size_t)c.n_layers;
  OWLORE_REQUIRE(qkv.size() == L && o.size() == L && gate_up.size() == L && down.size() == L,
                 "GPU model: input energies need one buffer per decoder layer (", L, ") for qkv, o, gate_up, down");
  OWLORE_REQUIRE(B >= 1 && B <= m.opt.max_batch, "GPU model: batch ", B, " exceeds the planned ", m.opt.max_batch);
  const int N = B * m.opt.seq, widest = std::max(std::max(c.d_model, c.q_dim()), c.ffn);
  // The column partials go to their own scratch (N·2F bf16 = N·F floats), planned under
  // Recompute::none only.
  OWLORE_REQUIRE(column_sum_squares_workspace_floats(N, widest) * sizeof(float) <= (size_t)N * 2 * c.ffn * sizeof(bf16),
                 "GPU model: input energies of ", widest, " channels do not fit their scratch");
  float* partials = reinterpret_cast<float*>(m.energy_partials);
  NvtxRange range("accumulate input energy");
  for (int l = 0; l < c.n_layers; l++) {
    const Impl::LayerPtrs& a = m.act[l];
    column_sum_squares(qkv[l], partials, a.ln1, N, c.d_model, m.stream);
    column_sum_squares(o[l], partials, a.att, N, c.q_dim(), m.stream);
    column_sum_squares(gate_up[l], partials, a.ln2, N, c.d_model, m.stream);
    column_sum_squares(down[l], partials, a.h, N, c.ffn, m.stream);
  }
}

double GpuModel::forward_backward(const int32_t* inputs, const int32_t* targets, int B, float loss_scale,
                                  const GradTargets& g, const TrainMask& mask) {
  Impl& m = *impl_;
  const ModelConfig& c = layout_.config;
  OWLORE_REQUIRE((int)g.layer.size() == c.n_layers && (int)mask.layers.size() == c.n_layers,
                 "GPU model: gradient targets / mask do not cover every layer");
  const int T = m.opt.seq, N = B * T, C = c.d_model, F = c.ffn, V = c.vocab;
  const int Hq = c.n_heads, Hkv = c.n_kv_heads, hd = c.head_dim, qkv_dim = c.q_dim() + 2 * c.kv_dim();
  cudaStream_t s = m.stream;
  Matmul& mm = *m.matmul;
  upload_batch(m, inputs, targets, B);
  forward_layers(m, B, /*keep_inputs=*/true);

  NvtxRange range("backward");
  // The tied head is the embedding matrix: it trains exactly when the embedding does.
  float* head_grad = c.tied_embeddings ? (mask.embedding ? g.embedding : nullptr) : (mask.head ? g.lm_head : nullptr);
  lm_head_ce_forward_backward(m.losses, m.dln, head_grad, m.lm_ws, m.lm_ws_bytes, m.ln_f, m.w(layout_.lm_head),
                              m.targets, loss_scale, N, C, V, m.opt.lm_head_chunk_tokens, mm, s);
  // d residual accumulates every norm's input gradient, from zero.
  CUDA_CHECK(cudaMemsetAsync(m.dx, 0, (size_t)N * C * sizeof(bf16), s));
  rmsnorm_backward(m.dx, mask.head ? g.final_norm : (float*)nullptr, m.rms_scratch, m.dln, m.x_final,
                   m.w(layout_.final_norm), m.rstd_f, N, C, s);
  const int lowest = lowest_backward_layer(mask);
  const bool streaming = static_cast<bool>(g.consume);
  OWLORE_REQUIRE(!streaming || m.matrix_ws, "GPU model: streamed weight gradients need a model planned with "
                                            "GpuModelOptions::stream_matrix_gradients");
  for (int l = c.n_layers - 1; l >= lowest; l--) {
    NvtxRange layer_range(("backward layer " + std::to_string(l)).c_str());
    if (m.offload) {
      // The last two layers' inputs are still in their slots from the forward; every lower one is
      // fetched while the layer above it runs.
      if (l - 1 >= lowest && l - 1 <= c.n_layers - 3) copy_input(m, l - 1, N, cudaMemcpyHostToDevice);
      if (l <= c.n_layers - 3) CUDA_CHECK(cudaStreamWaitEvent(s, m.copied[l % 2]));
    }
    const LayerOffsets& p = layout_.layers[l];
    const Impl::LayerPtrs& a = m.act[l];
    const bool trains = mask.layers[l], streamed = trains && streaming;
    float* lg = trains && !streamed ? g.layer[l] : nullptr;
    OWLORE_REQUIRE(!trains || (streamed ? g.layer_norms.size() == (size_t)c.n_layers && g.layer_norms[l] : lg != nullptr),
                   "GPU model: layer ", l, " trains but has no gradient buffer");
    auto norm_grad = [&](int64_t offset) {
      return !trains ? (float*)nullptr : streamed ? g.layer_norms[l] + (offset == p.attn_norm ? 0 : C) : lg + (offset - p.begin);
    };
    // dinp = dout W for the weight at w_offset (fused: its matrices' rows back to back), after its
    // weight gradient: into the layer's buffer (+=, one GEMM); or streamed, one GEMM per matrix
    // (rows of each in `matrices`) into ws (=), handed to consume() before the next overwrites it;
    // or none (frozen). The weight gradients are computed first, so dinp may be inp's buffer.
    auto linear_backward = [&](bf16* dinp, const bf16* dout, const bf16* inp, int64_t w_offset, int IC, int OC,
                               std::initializer_list<int> matrices, float* ws) {
      if (streamed) {
        int64_t first_row = 0;
        for (int rows : matrices) {
          mm.weight_gradient(ws, dout + first_row, OC, inp, N, IC, rows, /*accumulate=*/false, s);
          g.consume(l, w_offset + first_row * IC, (int64_t)rows * IC, ws);
          first_row += rows;
        }
        mm.backward(dinp, nullptr, dout, inp, m.w(w_offset), N, IC, OC, s);
      } else if (trains) {
        mm.backward(dinp, lg + (w_offset - p.begin), dout, inp, m.w(w_offset), N, IC, OC, s);
      } else {
        mm.backward(dinp, nullptr, dout, inp, m.w(w_offset), N, IC, OC, s);
      }
    };
    // Where streamed gradients go (see the constructor): with gradients_in_recompute the MLP's
    // take the qkv/attention buffer, so this layer recomputes its attention after its MLP.
    const bool attention_again = streamed && m.gradients_in_recompute;
    float* ws_mlp = m.gradients_in_recompute ? reinterpret_cast<float*>(a.qkv) : m.matrix_ws;
    float* ws_o = m.gradients_in_recompute ? reinterpret_cast<float*>(a.gate_up) : m.matrix_ws;
    float* ws_qkv = m.gradients_in_recompute ? reinterpret_cast<float*>(a.h) : m.matrix_ws;
    const bool recompute = m.opt.recompute != Recompute::none;
    if (m.opt.recompute == Recompute::layer) {  // rerun the layer's forward from its kept input
      NvtxRange recompute_range("recompute layer");
      rmsnorm_forward(a.ln1, a.rstd1, a.x_in, m.w(p.attn_norm), N, C, c.norm_eps, s);
      forward_layer_body(m, l, B);
    } else if (recompute) {  // the MLP's inputs: swiglu(gate_up) and rmsnorm(x_mid) into the shared buffers
      swiglu_forward(a.h, a.gate_up, N, F, s);
      rmsnorm_forward(a.ln2, m.rstd_scratch, a.x_mid, m.w(p.mlp_norm), N, C, c.norm_eps, s);
    }
    bf16 *dh = a.h, *dgate_up = a.gate_up;  // each gradient overwrites the activation it replaces
    linear_backward(dh, m.dx, a.h, p.wdown, F, C, {C}, ws_mlp);
    swiglu_backward(dgate_up, dh, a.gate_up, N, F, s);
    linear_backward(m.dln, dgate_up, a.ln2, p.wgate_up, C, 2 * F, {F, F}, ws_mlp);
    rmsnorm_backward(m.dx, norm_grad(p.mlp_norm), m.rms_scratch, m.dln, a.x_mid, m.w(p.mlp_norm), a.rstd2, N, C, s);
    if (attention_again) {
      NvtxRange recompute_range("recompute attention");
      rmsnorm_forward(a.ln1, a.rstd1, a.x_in, m.w(p.attn_norm), N, C, c.norm_eps, s);
      forward_attention(m, l, B);
    }
    // The MLP's buffers are free from here on: d attention and d qkv may take them.
    bf16* datt = m.d_in_mlp_buffers ? a.h : m.datt;
    bf16* dqkv = m.d_in_mlp_buffers ? a.gate_up : m.dqkv;
    linear_backward(datt, m.dx, a.att, p.wo, c.q_dim(), C, {C}, ws_o);
    attention_backward(dqkv, datt, a.qkv, a.att, a.lse, B, T, Hq, Hkv, hd, m.attn_ws, s);
    rope_backward(dqkv, dqkv, B, T, Hq + Hkv, hd, qkv_dim, m.inv_freq, 0, s);
    if (recompute && !attention_again) rmsnorm_forward(a.ln1, m.rstd_scratch, a.x_in, m.w(p.attn_norm), N, C, c.norm_eps, s);
    linear_backward(m.dln, dqkv, a.ln1, p.wqkv, C, qkv_dim, {c.q_dim(), c.kv_dim(), c.kv_dim()}, ws_qkv);
    rmsnorm_backward(m.dx, norm_grad(p.attn_norm), m.rms_scratch, m.dln, a.x_in, m.w(p.attn_norm), a.rstd1, N, C, s);
  }
  if (mask.embedding && g.embedding_rows) {
    OWLORE_REQUIRE(!c.tied_embeddings && g.embedding_row_of, "GPU model: a sparse embedding gradient needs an untied "
                                                              "head and a row map");
    encoder_backward_rows(g.embedding_rows, g.embedding_row_of, g.embedding_row_capacity, m.enc_ws, m.enc_ws_bytes, m.dx,
                          m.inputs, N, C, V, s);
  } else if (mask.embedding) {
    encoder_backward(g.embedding, m.enc_ws, m.enc_ws_bytes, m.dx, m.inputs, N, C, V, s);
  }
  return sum_losses(m, targets, N, nullptr);
}

}  // namespace owlore
