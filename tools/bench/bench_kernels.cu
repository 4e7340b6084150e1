// Kernel benchmark: every owlore kernel at SmolLM2-135M and LLaMA-2-7B layer shapes (8192 tokens),
// timed with CUDA events (warm-up, median of 15 samples of 10 calls each, inputs rotated over
// enough buffer sets to exceed 3x L2), against ceilings measured in the same run: device-to-device
// cudaMemcpy bandwidth (bytes read + written) and a large cuBLAS bf16 GEMM (8192^3). GEMMs through
// owlore's Matmul are also timed against the same raw cublasGemmEx call.
// Build: cmake --build build --target bench_kernels (tools/bench/CMakeLists.txt); on the device:
// tools/device/run.sh kernels, beside tools/bench/bench_kernels_peer.py.
// Output: one markdown table on stdout (bytes counted are the fewest the op must move).
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/encoder.cuh"
#include "kernels/lm_head_ce.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"
#include "model/config.h"

using namespace owlore;

#define CUBLAS_CHECK(call)                                                                   \
  do {                                                                                       \
    cublasStatus_t s_ = (call);                                                              \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                       \
      fprintf(stderr, "cuBLAS error %d in %s at %s:%d\n", (int)s_, #call, __FILE__, __LINE__); \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

namespace {

size_t g_l2 = 50u << 20;

static __global__ void fill_kernel(bf16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t h = hash_u32((uint32_t)i, seed);
    p[i] = __float2bfloat16((((float)(h & 0xFFFFFF) / 16777216.0f) * 2.0f - 1.0f) * scale);
  }
}
static __global__ void fill_f32_kernel(float* p, int64_t n, uint32_t seed, float scale, bool positive) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t h = hash_u32((uint32_t)i, seed);
    const float u = (float)(h & 0xFFFFFF) / 16777216.0f;
    p[i] = positive ? (u + 1e-3f) * scale : (u * 2.0f - 1.0f) * scale;
  }
}
static __global__ void count_nonfinite_kernel(int* count, const bf16* p, int64_t n) {
  int c = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    c += !isfinite(__bfloat162float(p[i]));
  if (c) atomicAdd(count, c);
}

uint32_t g_seed = 1;
struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t b) : bytes(b) { CUDA_CHECK(cudaMalloc(&p, b + 256)); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  bf16* h() const { return (bf16*)p; }
  float* f() const { return (float*)p; }
  int* i() const { return (int*)p; }
};
std::vector<std::unique_ptr<Buf>> g_bufs;
bf16* alloc_bf16(int64_t n, float scale = 1.0f) {
  g_bufs.emplace_back(new Buf(n * 2));
  fill_kernel<<<1024, 256>>>(g_bufs.back()->h(), n, g_seed++, scale);
  return g_bufs.back()->h();
}
float* alloc_f32(int64_t n, float scale = 1.0f, bool positive = false) {
  g_bufs.emplace_back(new Buf(n * 4));
  fill_f32_kernel<<<1024, 256>>>(g_bufs.back()->f(), n, g_seed++, scale, positive);
  return g_bufs.back()->f();
}
void free_all() {
  CUDA_CHECK(cudaDeviceSynchronize());
  g_bufs.clear();
}
int sets_for(double bytes_per_call) { return std::max(1, std::min(16, (int)std::ceil(3.0 * g_l2 / bytes_per_call))); }

// median ms per call of op(set), rotating over n_sets
double time_ms(const std::function<void(int)>& op, int n_sets, int reps = 10, int samples = 15) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  int k = 0;
  for (int i = 0; i < 3; i++) op(k++ % n_sets);
  std::vector<float> ms;
  for (int s = 0; s < samples; s++) {
    CUDA_CHECK(cudaEventRecord(a));
    for (int r = 0; r < reps; r++) op(k++ % n_sets);
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t / reps);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2];
}

bool finite(const bf16* p, int64_t n) {
  static int* d = nullptr;
  if (!d) CUDA_CHECK(cudaMalloc(&d, sizeof(int)));
  CUDA_CHECK(cudaMemset(d, 0, sizeof(int)));
  count_nonfinite_kernel<<<1024, 256>>>(d, p, n);
  int h = 0;
  CUDA_CHECK(cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost));
  return h == 0;
}

double g_copy_gbs = 0, g_gemm_tflops = 0;
void row_bw(const char* model, const char* op, const std::string& shape, double ms, double bytes, bool ok) {
  const double gbs = bytes / ms / 1e6;
  printf("| %s | %s | %s | %.1f | %.0f GB/s | %.0f GB/s | %.0f%% | %s |\n", model, op, shape.c_str(), ms * 1e3, gbs,
         g_copy_gbs, 100.0 * gbs / g_copy_gbs, ok ? "ok" : "NON-FINITE");
  fflush(stdout);
}
void row_flops(const char* model, const char* op, const std::string& shape, double ms, double flops, double ref_tflops,
               const char* ref_name, bool ok) {
  const double tf = flops / ms / 1e9;
  printf("| %s | %s | %s | %.1f | %.0f TFLOP/s | %.0f TFLOP/s (%s) | %.0f%% | %s |\n", model, op, shape.c_str(), ms * 1e3,
         tf, ref_tflops, ref_name, 100.0 * tf / ref_tflops, ok ? "ok" : "NON-FINITE");
  fflush(stdout);
}

struct Preset {
  const char* name;
  int C, F, Hq, Hkv, hd, V;
  float theta;
};

// Raw cuBLAS call with the same column-major problem as Matmul::gemm.
void raw_gemm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, const bf16* A, int lda, const bf16* B, int ldb,
              cudaDataType_t dt, void* D, int ldd, float beta) {
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A,
                            CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta, D, dt, ldd, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void bench_preset(const Preset& P, int N, Matmul& mm, cublasHandle_t cublas) {
  const char* M = P.name;
  const int C = P.C, F = P.F;
  const int64_t NC = (int64_t)N * C, NF = (int64_t)N * F;
  char shape[128];
  // ---- RMSNorm
  {
    const double bytes = 2.0 * NC * 2 + 4.0 * N + 2.0 * C;
    const int S = sets_for(bytes);
    std::vector<bf16*> x(S), y(S);
    std::vector<float*> r(S);
    for (int s = 0; s < S; s++) x[s] = alloc_bf16(NC), y[s] = alloc_bf16(NC), r[s] = alloc_f32(N);
    bf16* w = alloc_bf16(C);
    snprintf(shape, sizeof shape, "%dx%d", N, C);
    double ms = time_ms([&](int s) { rmsnorm_forward(y[s], r[s], x[s], w, N, C, 1e-5f, 0); }, S);
    row_bw(M, "rmsnorm_forward", shape, ms, bytes, finite(y[0], NC));
    // fused residual + rmsnorm: read a, b; write residual, out
    const double fbytes = 4.0 * NC * 2 + 4.0 * N;
    std::vector<bf16*> b2(S), res(S);
    for (int s = 0; s < S; s++) b2[s] = alloc_bf16(NC), res[s] = alloc_bf16(NC);
    ms = time_ms([&](int s) { rmsnorm_residual_forward(res[s], y[s], r[s], x[s], b2[s], w, N, C, 1e-5f, 0); }, S);
    row_bw(M, "rmsnorm_residual_forward", shape, ms, fbytes, finite(y[0], NC));
    // backward: read dout, inp, rstd and dinp (it accumulates); write dinp; dweight fp32
    const double bbytes = 4.0 * NC * 2 + 4.0 * N;
    float* scratch = alloc_f32(rmsnorm_backward_scratch_floats(N, C));
    float* dw = alloc_f32(C);
    rmsnorm_forward(y[0], r[0], x[0], w, N, C, 1e-5f, 0);
    for (int s = 0; s < S; s++) CUDA_CHECK(cudaMemcpy(r[s], r[0], 4 * N, cudaMemcpyDeviceToDevice));
    ms = time_ms([&](int s) { rmsnorm_backward(res[s], dw, scratch, b2[s], x[s], w, r[s], N, C, 0); }, S);
    row_bw(M, "rmsnorm_backward (+fp32 dw)", shape, ms, bbytes, finite(res[0], NC));
    free_all();
  }
  // ---- SwiGLU
  {
    const double fbytes = 3.0 * NF * 2, bbytes = 5.0 * NF * 2;
    const int S = sets_for(fbytes);
    std::vector<bf16*> gu(S), o(S), dgu(S);
    for (int s = 0; s < S; s++) gu[s] = alloc_bf16(2 * NF, 3.0f), o[s] = alloc_bf16(NF), dgu[s] = alloc_bf16(2 * NF);
    snprintf(shape, sizeof shape, "%dx%d", N, F);
    double ms = time_ms([&](int s) { swiglu_forward(o[s], gu[s], N, F, 0); }, S);
    row_bw(M, "swiglu_forward", shape, ms, fbytes, finite(o[0], NF));
    ms = time_ms([&](int s) { swiglu_backward(dgu[s], o[s], gu[s], N, F, 0); }, S);
    row_bw(M, "swiglu_backward", shape, ms, bbytes, finite(dgu[0], 2 * NF));
    free_all();
  }
  // ---- RoPE on packed qkv rows, q and k heads, in place
  {
    const int row = (P.Hq + 2 * P.Hkv) * P.hd, heads = P.Hq + P.Hkv;
    const double bytes = 2.0 * N * heads * P.hd * 2;
    const int S = sets_for(bytes);
    std::vector<bf16*> q(S);
    for (int s = 0; s < S; s++) q[s] = alloc_bf16((int64_t)N * row);
    snprintf(shape, sizeof shape, "%dx(%d+%d)x%d", N, P.Hq, P.Hkv, P.hd);
    const int B = N / 2048, T = 2048;
    ModelConfig fc;
    fc.head_dim = P.hd;
    fc.rope_theta = P.theta;
    const std::vector<double> freqs = rope_inv_freq(fc);
    const std::vector<float> freqs_f(freqs.begin(), freqs.end());
    float* inv_freq = alloc_f32(P.hd / 2);
    CUDA_CHECK(cudaMemcpy(inv_freq, freqs_f.data(), freqs_f.size() * sizeof(float), cudaMemcpyHostToDevice));
    double ms = time_ms([&](int s) { rope_forward(q[s], q[s], B, T, heads, P.hd, row, inv_freq, 0, 0); }, S);
    row_bw(M, "rope_forward (in place)", shape, ms, bytes, finite(q[0], (int64_t)N * row));
    ms = time_ms([&](int s) { rope_backward(q[s], q[s], B, T, heads, P.hd, row, inv_freq, 0, 0); }, S);
    row_bw(M, "rope_backward (in place)", shape, ms, bytes, finite(q[0], (int64_t)N * row));
    free_all();
  }
  // ---- embedding
  {
    bf16* wte = alloc_bf16((int64_t)P.V * C);
    std::vector<int> tok(N);
    uint32_t st = 12345;
    std::set<int> uniq;
    for (int n = 0; n < N; n++) {
      st = st * 1664525u + 1013904223u;
      tok[n] = (int)((st >> 8) % (uint32_t)P.V);
      uniq.insert(tok[n]);
    }
    g_bufs.emplace_back(new Buf(4 * N));
    int* d_tok = g_bufs.back()->i();
    CUDA_CHECK(cudaMemcpy(d_tok, tok.data(), 4 * N, cudaMemcpyHostToDevice));
    const double fbytes = 2.0 * NC * 2 + 4.0 * N;
    const int S = sets_for(fbytes);
    std::vector<bf16*> o(S);
    for (int s = 0; s < S; s++) o[s] = alloc_bf16(NC);
    snprintf(shape, sizeof shape, "%d tok, %dx%d", N, P.V, C);
    double ms = time_ms([&](int s) { encoder_forward(o[s], d_tok, wte, N, C, P.V, 0); }, S);
    row_bw(M, "encoder_forward", shape, ms, fbytes, finite(o[0], NC));
    const size_t ws_bytes = encoder_backward_workspace_bytes(N, P.V);
    g_bufs.emplace_back(new Buf(ws_bytes));
    void* ws = g_bufs.back()->p;
    float* dwte = alloc_f32((int64_t)P.V * C);
    const double bbytes = 1.0 * NC * 2 + 2.0 * uniq.size() * C * 4 + 4.0 * N;
    ms = time_ms([&](int s) { encoder_backward(dwte, ws, ws_bytes, o[s], d_tok, N, C, P.V, 0); }, S);
    row_bw(M, "encoder_backward (fp32 dwte)", shape, ms, bbytes, true);
    free_all();
  }
  // ---- AdamW over one decoder layer's parameters
  {
    const int64_t n = (int64_t)C * (P.Hq * P.hd) * 2 + (int64_t)C * (P.Hkv * P.hd) * 2 + 3LL * C * F;
    snprintf(shape, sizeof shape, "%.1fM params", n / 1e6);
    bf16* p = alloc_bf16(n, 0.1f);
    bf16* g = alloc_bf16(n, 0.01f);
    float* m = alloc_f32(n, 1e-3f);
    float* v = alloc_f32(n, 1e-6f, true);
    int step = 1;
    double ms = time_ms([&](int) { adamw_update(p, m, v, nullptr, g, n, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, step++, 1.0f, nullptr, 7u, 0); }, 1);
    row_bw(M, "adamw (fp32 m,v; SR)", shape, ms, 22.0 * n, finite(p, n));
    float* master = alloc_f32(n, 0.1f);
    ms = time_ms([&](int) { adamw_update(p, m, v, master, g, n, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, step++, 1.0f, nullptr, 7u, 0); }, 1);
    row_bw(M, "adamw (fp32 m,v, fp32 master)", shape, ms, 30.0 * n, finite(p, n));
    bf16* m16 = alloc_bf16(n, 1e-3f);
    bf16* v16 = alloc_bf16(n, 1e-6f);
    fill_kernel<<<1024, 256>>>(v16, n, 99, 0.0f);  // v >= 0: start at 0
    ms = time_ms([&](int) { adamw_update(p, m16, v16, nullptr, g, n, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, step++, 1.0f, nullptr, 7u, 0); }, 1);
    row_bw(M, "adamw (bf16 m,v; SR)", shape, ms, 14.0 * n, finite(p, n));
    float* out = alloc_f32(1);
    float* scratch = alloc_f32(sum_squares_scratch_floats());
    ms = time_ms([&](int) { sum_squares(out, scratch, g, n, false, 0); }, 1);
    row_bw(M, "sum_squares (bf16 grad)", shape, ms, 2.0 * n, true);
    free_all();
  }
  // ---- GEMMs through Matmul vs raw cublasGemmEx (same column-major problem)
  {
    struct G {
      const char* name;
      int n_, ic, oc;
      int kind;  // 0 forward, 1 dinp, 2 dW fp32
    };
    const int QKV = (P.Hq + 2 * P.Hkv) * P.hd;
    const G gs[] = {{"matmul fwd qkv", N, C, QKV, 0},        {"matmul fwd gate_up", N, C, 2 * F, 0},
                    {"matmul fwd down", N, F, C, 0},          {"matmul dinp down", N, F, C, 1},
                    {"matmul dW gate_up (fp32)", N, C, 2 * F, 2}};
    for (const G& g : gs) {
      bf16* x = alloc_bf16((int64_t)g.n_ * g.ic);
      bf16* w = alloc_bf16((int64_t)g.oc * g.ic, 0.05f);
      bf16* dy = alloc_bf16((int64_t)g.n_ * g.oc);
      bf16* y = alloc_bf16((int64_t)g.n_ * g.oc);
      bf16* dx = alloc_bf16((int64_t)g.n_ * g.ic);
      float* dw = alloc_f32((int64_t)g.oc * g.ic);
      const double flops = 2.0 * g.n_ * g.ic * g.oc;
      std::function<void(int)> ours, raw;
      if (g.kind == 0) {
        ours = [&](int) { mm.forward(y, x, w, g.n_, g.ic, g.oc, 0); };
        raw = [&](int) { raw_gemm(cublas, true, false, g.oc, g.n_, g.ic, w, g.ic, x, g.ic, CUDA_R_16BF, y, g.oc, 0.0f); };
      } else if (g.kind == 1) {
        ours = [&](int) { mm.backward(dx, nullptr, dy, x, w, g.n_, g.ic, g.oc, 0); };
        raw = [&](int) { raw_gemm(cublas, false, false, g.ic, g.n_, g.oc, w, g.ic, dy, g.oc, CUDA_R_16BF, dx, g.ic, 0.0f); };
      } else {
        ours = [&](int) { mm.backward(nullptr, dw, dy, x, w, g.n_, g.ic, g.oc, 0); };
        raw = [&](int) { raw_gemm(cublas, false, true, g.ic, g.oc, g.n_, x, g.ic, dy, g.oc, CUDA_R_32F, dw, g.ic, 1.0f); };
      }
      const double ms_raw = time_ms(raw, 1), ms_ours = time_ms(ours, 1);
      snprintf(shape, sizeof shape, "%dx%dx%d", g.n_, g.ic, g.oc);
      row_flops(M, g.name, shape, ms_ours, flops, flops / ms_raw / 1e9, "raw cuBLAS", true);
      free_all();
    }
  }
  // ---- fused LM head + CE (forward + backward, fp32 dW), chunked
  for (int chunk : {2048, 8192}) {
    bf16* x = alloc_bf16(NC);
    bf16* w = alloc_bf16((int64_t)P.V * C, 0.05f);
    bf16* dx = alloc_bf16(NC);
    float* dw = alloc_f32((int64_t)P.V * C);
    float* losses = alloc_f32(N);
    std::vector<int> t(N);
    for (int n = 0; n < N; n++) t[n] = (n * 7919) % P.V;
    g_bufs.emplace_back(new Buf(4 * N));
    int* d_t = g_bufs.back()->i();
    CUDA_CHECK(cudaMemcpy(d_t, t.data(), 4 * N, cudaMemcpyHostToDevice));
    const size_t ws_bytes = lm_head_ce_workspace_bytes(chunk, P.V);
    g_bufs.emplace_back(new Buf(ws_bytes));
    bf16* ws = g_bufs.back()->h();
    const double ms = time_ms([&](int) {
      lm_head_ce_forward_backward(losses, dx, dw, ws, ws_bytes, x, w, d_t, 1.0f / N, N, C, P.V, chunk, mm, 0);
    }, 1, 3, 7);
    snprintf(shape, sizeof shape, "%dx%dx%d chunk %d (ws %.0f MB)", N, C, P.V, chunk, ws_bytes / 1e6);
    row_flops(M, "lm_head_ce fwd+bwd", shape, ms, 6.0 * N * C * P.V, g_gemm_tflops, "GEMM 8192^3", finite(dx, NC));
    free_all();
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  g_l2 = prop.l2CacheSize;
  // ceilings
  {
    const size_t bytes = 2ull << 30;
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    const double ms = time_ms([&](int) { CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0)); }, 1, 5, 11);
    g_copy_gbs = 2.0 * bytes / ms / 1e6;
    cudaFree(a);
    cudaFree(b);
  }
  cublasHandle_t cublas;
  CUBLAS_CHECK(cublasCreate(&cublas));
  {
    const int n = 8192;
    bf16* A = alloc_bf16((int64_t)n * n);
    bf16* B = alloc_bf16((int64_t)n * n);
    bf16* D = alloc_bf16((int64_t)n * n);
    const double ms = time_ms([&](int) { raw_gemm(cublas, true, false, n, n, n, A, n, B, n, CUDA_R_16BF, D, n, 0.0f); }, 1, 5, 11);
    g_gemm_tflops = 2.0 * n * n * n / ms / 1e9;
    free_all();
  }
  printf("card: %s (%d SMs, L2 %.0f MB)\n", prop.name, prop.multiProcessorCount, g_l2 / 1e6);
  printf("ceilings: device-to-device copy %.0f GB/s (read+write), cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s\n\n", g_copy_gbs,
         g_gemm_tflops);
  printf("| model | op | shape | time (us) | achieved | ceiling | ratio | output |\n");
  printf("|---|---|---|---|---|---|---|---|\n");
  Matmul mm;
  const Preset presets[] = {{"SmolLM2-135M", 576, 1536, 9, 3, 64, 49152, 1e5f}, {"LLaMA-2-7B", 4096, 11008, 32, 32, 128, 32000, 1e4f}};
  for (const Preset& p : presets) bench_preset(p, 8192, mm, cublas);
  cublasDestroy(cublas);
  return 0;
}
