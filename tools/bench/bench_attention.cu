// Benchmark of the flash attention kernels (src/kernels/attention.cuh): verify, warm up, time.
// Build: cmake --build build --target bench_attention (tools/bench/CMakeLists.txt).
// Run: bench_attention [ours.jsonl]   (tools/bench/bench_attention_peer.py times torch SDPA and
// joins; on the device both run through tools/device/run.sh attention)
// Shapes: causal, B*T = 16384 tokens, T 512..4096; hd 128 with Hq/Hkv 32/8, hd 64 with 9/3.
// FLOPs (causal): fwd 4*B*Hq*T^2*hd/2, bwd 2.5x fwd (the FA convention, whatever a kernel recomputes).
// Besides the shipped configuration it times tile variants per kernel, to choose Config<HD>.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/attention.cuh"
#include "kernels/ref/ops_ref.h"

using namespace owlore;

static __global__ void fill_random(bf16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    // sum of two uniforms in [-1,1): mean 0, std 0.82; never zeros
    const float u1 = hash_u32((uint32_t)i, seed) * 2.3283064e-10f * 2.f - 1.f;
    const float u2 = hash_u32((uint32_t)i, seed + 1) * 2.3283064e-10f * 2.f - 1.f;
    x[i] = __float2bfloat16(u1 + u2);
  }
}

static float median_ms(const std::function<void()>& fn, int reps) {
  for (int i = 0; i < 3; i++) fn();
  std::vector<cudaEvent_t> ev(reps + 1);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  CUDA_CHECK(cudaEventRecord(ev[0]));
  for (int i = 0; i < reps; i++) {
    fn();
    CUDA_CHECK(cudaEventRecord(ev[i + 1]));
  }
  CUDA_CHECK(cudaEventSynchronize(ev[reps]));
  std::vector<float> t(reps);
  for (int i = 0; i < reps; i++) CUDA_CHECK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

static double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); i++) d += (a[i] - (double)b[i]) * (a[i] - (double)b[i]), n += (double)b[i] * b[i];
  return std::sqrt(d / n);
}

static std::vector<float> download_bf16(const bf16* p, size_t n) {
  std::vector<bf16> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; i++) f[i] = __bfloat162float(h[i]);
  return f;
}

// Verify on a small ragged shape against the CPU twin before timing anything.
static bool verify(int hd) {
  const int B = 1, T = 200, Hq = 8, Hkv = 2;
  const size_t n_qkv = (size_t)B * T * (Hq + 2 * Hkv) * hd, n_out = (size_t)B * T * Hq * hd;
  bf16 *qkv, *out, *dout, *dqkv;
  float *lse, *ws;
  CUDA_CHECK(cudaMalloc(&qkv, n_qkv * 2));
  CUDA_CHECK(cudaMalloc(&dqkv, n_qkv * 2));
  CUDA_CHECK(cudaMalloc(&out, n_out * 2));
  CUDA_CHECK(cudaMalloc(&dout, n_out * 2));
  CUDA_CHECK(cudaMalloc(&lse, (size_t)B * Hq * T * 4));
  CUDA_CHECK(cudaMalloc(&ws, attention_backward_workspace_bytes(B, T, Hq)));
  fill_random<<<64, 256>>>(qkv, n_qkv, 11);
  fill_random<<<64, 256>>>(dout, n_out, 12);
  CUDA_CHECK(cudaMemset(dqkv, 0xFF, n_qkv * 2));
  CUDA_CHECK(cudaMemset(out, 0xFF, n_out * 2));
  attention_forward(out, lse, qkv, B, T, Hq, Hkv, hd, 0);
  attention_backward(dqkv, dout, qkv, out, lse, B, T, Hq, Hkv, hd, ws, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto h_qkv = download_bf16(qkv, n_qkv), h_dout = download_bf16(dout, n_out);
  const auto h_out = download_bf16(out, n_out), h_dqkv = download_bf16(dqkv, n_qkv);
  std::vector<float> r_out(n_out), r_lse((size_t)B * Hq * T), r_dqkv(n_qkv);
  attention_forward_ref(r_out.data(), r_lse.data(), h_qkv.data(), B, T, Hq, Hkv, hd);
  attention_backward_ref(r_dqkv.data(), h_dout.data(), h_qkv.data(), r_out.data(), r_lse.data(), B, T, Hq, Hkv, hd);
  const double e_out = rel_err(h_out, r_out), e_d = rel_err(h_dqkv, r_dqkv);
  const bool ok = e_out < 2e-2 && e_d < 3e-2;  // bf16 scale; the gtest holds the real bounds
  std::printf("verify hd%d T%d 8/2: out rel %.3g, dqkv rel %.3g: %s\n", hd, T, e_out, e_d, ok ? "ok" : "FAILED");
  cudaFree(qkv), cudaFree(dqkv), cudaFree(out), cudaFree(dout), cudaFree(lse), cudaFree(ws);
  return ok;
}

struct Bufs {
  bf16 *qkv, *out, *dout, *dqkv;
  float *lse, *ws;
};

template <int HD>
static void run_shape(FILE* jl, int B, int T, int Hq, int Hkv, int reps) {
  using namespace attention_detail;
  const size_t n_qkv = (size_t)B * T * (Hq + 2 * Hkv) * HD, n_out = (size_t)B * T * Hq * HD;
  Bufs b;
  CUDA_CHECK(cudaMalloc(&b.qkv, n_qkv * 2));
  CUDA_CHECK(cudaMalloc(&b.dqkv, n_qkv * 2));
  CUDA_CHECK(cudaMalloc(&b.out, n_out * 2));
  CUDA_CHECK(cudaMalloc(&b.dout, n_out * 2));
  CUDA_CHECK(cudaMalloc(&b.lse, (size_t)B * Hq * T * 4));
  CUDA_CHECK(cudaMalloc(&b.ws, attention_backward_workspace_bytes(B, T, Hq)));
  fill_random<<<1024, 256>>>(b.qkv, n_qkv, 1);
  fill_random<<<1024, 256>>>(b.dout, n_out, 2);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double fwd_flop = 4.0 * B * Hq * (double)T * T * HD / 2, fb_flop = 3.5 * fwd_flop;

  auto fwd = [&] { attention_forward(b.out, b.lse, b.qkv, B, T, Hq, Hkv, HD, 0); };
  auto bwd = [&] { attention_backward(b.dqkv, b.dout, b.qkv, b.out, b.lse, B, T, Hq, Hkv, HD, b.ws, 0); };
  const float t_fwd = median_ms(fwd, reps);
  const float t_fb = median_ms([&] { fwd(); bwd(); }, reps);
  // Per-kernel times of the tile variants (for Config<HD>).
  using C1 = ConfigMt1<HD>;
  using C2 = ConfigMt2<HD>;
  using F2b = TileConfig<HD, 4, 2, (HD == 64 ? 32 : 64), (HD == 64), 4, 1, 32, 4, 2, 64>;  // other BN
  std::vector<std::pair<std::string, float>> var;
  auto add = [&](const char* name, const std::function<void()>& fn) { var.emplace_back(name, median_ms(fn, reps)); };
  add("dot", [&] { launch_backward_dot<HD>(b.ws, b.dout, b.out, B, T, Hq, 0); });
  add("fwd_mt1", [&] { launch_forward<C1>(b.out, b.lse, b.qkv, B, T, Hq, Hkv, 0); });
  add("fwd_mt2", [&] { launch_forward<C2>(b.out, b.lse, b.qkv, B, T, Hq, Hkv, 0); });
  add("fwd_mt2_bn", [&] { launch_forward<F2b>(b.out, b.lse, b.qkv, B, T, Hq, Hkv, 0); });
  add("dkdv_mt1", [&] { launch_backward_dkdv<C1>(b.dqkv, b.dout, b.qkv, b.lse, b.ws, B, T, Hq, Hkv, 0); });
  add("dkdv_mt2", [&] { launch_backward_dkdv<C2>(b.dqkv, b.dout, b.qkv, b.lse, b.ws, B, T, Hq, Hkv, 0); });
  add("dq_mt1", [&] { launch_backward_dq<C1>(b.dqkv, b.dout, b.qkv, b.lse, b.ws, B, T, Hq, Hkv, 0); });
  add("dq_mt2", [&] { launch_backward_dq<C2>(b.dqkv, b.dout, b.qkv, b.lse, b.ws, B, T, Hq, Hkv, 0); });
  add("dq_mt2_bn", [&] { launch_backward_dq<F2b>(b.dqkv, b.dout, b.qkv, b.lse, b.ws, B, T, Hq, Hkv, 0); });
  // outputs of the timed runs must be finite
  fwd();
  bwd();
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = download_bf16(b.out, std::min(n_out, (size_t)1 << 20));
  const auto d = download_bf16(b.dqkv, std::min(n_qkv, (size_t)1 << 20));
  bool finite = true;
  for (float x : o) finite &= std::isfinite(x);
  for (float x : d) finite &= std::isfinite(x);

  std::string vtxt, vjson;
  for (auto& [name, ms] : var) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " %s %.3f", name.c_str(), ms);
    vtxt += buf;
    std::snprintf(buf, sizeof buf, "%s\"%s\":%.5f", vjson.empty() ? "" : ",", name.c_str(), ms);
    vjson += buf;
  }
  std::printf("hd%-3d B%-3d T%-5d H%d/%d  fwd %7.3f ms %6.1f TF/s | fwd+bwd %7.3f ms %6.1f TF/s |%s %s\n", HD, B, T,
              Hq, Hkv, t_fwd, fwd_flop / t_fwd * 1e-9, t_fb, fb_flop / t_fb * 1e-9, vtxt.c_str(),
              finite ? "" : "NON-FINITE OUTPUT");
  if (jl)
    std::fprintf(jl,
                 "{\"hd\":%d,\"B\":%d,\"T\":%d,\"Hq\":%d,\"Hkv\":%d,\"fwd_ms\":%.5f,\"fwdbwd_ms\":%.5f,"
                 "\"variants\":{%s},\"finite\":%s}\n",
                 HD, B, T, Hq, Hkv, t_fwd, t_fb, vjson.c_str(), finite ? "true" : "false");
  cudaFree(b.qkv), cudaFree(b.dqkv), cudaFree(b.out), cudaFree(b.dout), cudaFree(b.lse), cudaFree(b.ws);
}

int main(int argc, char** argv) {
  try {
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("card: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    if (!verify(64) || !verify(128)) return 1;
    FILE* jl = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
    // Inputs of the hd64 shapes (~31 MB) fit the 50-60 MB L2; attention re-reads K/V from L2 by
    // design, and is compute-bound at these sizes, so no rotation (the peer sees the same).
    for (int T : {512, 1024, 2048, 4096}) run_shape<128>(jl, 16384 / T, T, 32, 8, 20);
    for (int T : {512, 1024, 2048, 4096}) run_shape<64>(jl, 16384 / T, T, 9, 3, 20);
    if (jl) std::fclose(jl);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
