// GPU linear layer (cuBLASLt) and the fused, chunked LM head + cross-entropy vs their CPU twins.
// Baselines: matmul outputs are the twin's result rounded to bf16 (PyTorch bf16 matmul = fp32
// accumulate, one rounding). The LM head baseline emulates PyTorch bf16 training: logits rounded
// to bf16, loss in fp32 from them, dlogits rounded to bf16, dx = dlogits W rounded, dW accumulated
// from the bf16 dlogits (rounded once per chunk when dW is bf16).
// fp32 losses are not held to 1e-5: they come from bf16 logits (as in PyTorch); they are held to
// 2x the emulated PyTorch error instead.
#include <gtest/gtest.h>

#include <cmath>

#include "base/tokens.h"
#include "kernel_test_util.h"
#include "kernels/lm_head_ce.cuh"
#include "kernels/matmul.cuh"
#include "kernels/ref/ops_ref.h"

using namespace owlore;
using namespace owlore::test;

namespace {
struct MmShape {
  int N, IC, OC;
  bool preset;
};
std::vector<MmShape> mm_shapes() {
  std::vector<MmShape> all = {{64, 576, 960, true},   {64, 1536, 576, true}, {16, 4096, 4096, true},
                              {16, 11008, 4096, true}, {1, 45, 17, false},    {3, 45, 261, false},
                              {17, 64, 3, false},      {1000, 45, 17, false}, {17, 576, 1536, false}};
  std::vector<MmShape> out;
  for (auto s : all)
    if (!s.preset || !small_shapes_only()) out.push_back(s);
  return out;
}
}  // namespace

TEST(MatmulGpu, ForwardAndBackwardMatchTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  Matmul mm;
  for (const MmShape s : mm_shapes()) {
    const int64_t nin = (int64_t)s.N * s.IC, nout = (int64_t)s.N * s.OC, nw = (int64_t)s.OC * s.IC;
    const auto x = round_bf16(random_vector(nin, 1 + s.N + s.IC));
    const auto w = round_bf16(random_vector(nw, 2 + s.OC + s.IC, 1.0f / std::sqrt((float)s.IC)));
    const auto g = round_bf16(random_vector(nout, 3 + s.N + s.OC));
    const auto dw0 = round_bf16(random_vector(nw, 4 + s.OC, 0.5f));
    std::vector<float> ref(nout), ref_dx(nin), ref_dw = dw0;
    matmul_forward_ref(ref.data(), x.data(), w.data(), s.N, s.IC, s.OC);
    matmul_backward_ref(ref_dx.data(), ref_dw.data(), g.data(), x.data(), w.data(), s.N, s.IC, s.OC);

    DeviceBuffer<bf16> d_x(nin), d_w(nw), d_g(nout), d_out(nout), d_dx(nin), d_dw(nw);
    DeviceBuffer<float> d_dw32(nw);
    upload_bf16(d_x, x);
    upload_bf16(d_w, w);
    upload_bf16(d_g, g);
    d_out.poison();
    d_dx.poison();
    upload_bf16(d_dw, dw0);
    d_dw32.upload(dw0);
    mm.forward(d_out.ptr, d_x.ptr, d_w.ptr, s.N, s.IC, s.OC, 0);
    mm.backward(d_dx.ptr, d_dw.ptr, d_g.ptr, d_x.ptr, d_w.ptr, s.N, s.IC, s.OC, 0);
    mm.backward(nullptr, d_dw32.ptr, d_g.ptr, d_x.ptr, d_w.ptr, s.N, s.IC, s.OC, 0);
    sync_and_check();
    const std::string wh = " N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC);
    EXPECT_REL_WITHIN(("matmul_forward" + wh).c_str(), rel_error(download_float(d_out), ref),
                      bf16_bound(rounding_baseline(ref), 2.0));
    EXPECT_REL_WITHIN(("matmul_backward dinp" + wh).c_str(), rel_error(download_float(d_dx), ref_dx),
                      bf16_bound(rounding_baseline(ref_dx), 3.0));
    EXPECT_REL_WITHIN(("matmul_backward bf16 dweight" + wh).c_str(), rel_error(download_float(d_dw), ref_dw),
                      bf16_bound(rounding_baseline(ref_dw), 3.0));
    EXPECT_REL_WITHIN(("matmul_backward fp32 dweight" + wh).c_str(), rel_error(d_dw32.download(), ref_dw), 1e-5);
    // frozen weight: dinp only, identical
    const auto dx_first = d_dx.download();
    d_dx.poison();
    const size_t plans = mm.cached_plans();
    mm.backward(d_dx.ptr, nullptr, d_g.ptr, d_x.ptr, d_w.ptr, s.N, s.IC, s.OC, 0);
    sync_and_check();
    EXPECT_EQ(mm.cached_plans(), plans) << "plan not reused" << wh;
    const auto dx = d_dx.download();
    EXPECT_EQ(0, std::memcmp(dx.data(), dx_first.data(), dx.size() * 2)) << "dinp differs when dW is frozen" << wh;
  }
}

namespace {
struct HeadShape {
  int N, C, V, chunk;
  bool preset;
};

// PyTorch-bf16 emulation of the chunked head: losses, dx, dW fp32 (dw) and bf16 (dw16, rounded
// once per chunk as the kernel does).
void emulate_head(std::vector<float>& loss, std::vector<float>& dx, std::vector<float>& dw, std::vector<float>& dw16,
                  const std::vector<float>& x, const std::vector<float>& w, const std::vector<int>& t, float scale,
                  const HeadShape& s) {
  const int N = s.N, C = s.C, V = s.V;
  std::vector<float> logits(V), dl((int64_t)s.chunk * V), dw_chunk((int64_t)V * C);
  for (int n0 = 0; n0 < N; n0 += s.chunk) {
    const int rows = std::min(s.chunk, N - n0);
    std::fill(dw_chunk.begin(), dw_chunk.end(), 0.0f);
    for (int r = 0; r < rows; r++) {
      const int n = n0 + r;
      const float* xr = &x[(int64_t)n * C];
      double mx = -INFINITY;
      for (int v = 0; v < V; v++) {
        float acc = 0.0f;
        for (int c = 0; c < C; c++) acc += xr[c] * w[(int64_t)v * C + c];
        logits[v] = bf16_round(acc);
        mx = std::max(mx, (double)logits[v]);
      }
      double sum = 0.0;
      for (int v = 0; v < V; v++) sum += std::exp(logits[v] - mx);
      const double lse = mx + std::log(sum);
      loss[n] = t[n] < 0 ? 0.0f : (float)(lse - logits[t[n]]);
      float* dlr = &dl[(int64_t)r * V];
      for (int v = 0; v < V; v++)
        dlr[v] = t[n] < 0 ? 0.0f : bf16_round(scale * (float)(std::exp(logits[v] - lse) - (v == t[n] ? 1.0 : 0.0)));
      for (int c = 0; c < C; c++) {
        float acc = 0.0f;
        for (int v = 0; v < V; v++) acc += dlr[v] * w[(int64_t)v * C + c];
        dx[(int64_t)n * C + c] = bf16_round(acc);
      }
      for (int v = 0; v < V; v++)
        if (dlr[v] != 0.0f)
          for (int c = 0; c < C; c++) dw_chunk[(int64_t)v * C + c] += dlr[v] * xr[c];
    }
    for (int64_t i = 0; i < (int64_t)V * C; i++) {
      dw[i] += dw_chunk[i];
      dw16[i] = bf16_round(dw16[i] + dw_chunk[i]);
    }
  }
}
}  // namespace

// The weight gradient of each matrix of a fused output alone (q, k, v of qkv; gate, up of
// gate_up), read with the fused row stride: = overwrites, += accumulates, and each block equals
// its rows of the fused dW to fp32 precision. Odd widths put the blocks at unaligned addresses.
TEST(MatmulGpu, WeightGradientOfEachMatrixOfAFusedOutput) {
  OWLORE_SKIP_WITHOUT_GPU();
  Matmul mm;
  struct Case {
    int N, IC;
    std::vector<int> rows;
  };
  for (const Case& k : {Case{33, 45, {17, 5, 5}}, Case{64, 576, {576, 192, 192}}, Case{7, 195, {331, 331}}}) {
    int OC = 0;
    for (int r : k.rows) OC += r;
    const int64_t nin = (int64_t)k.N * k.IC, nout = (int64_t)k.N * OC;
    const auto x = round_bf16(random_vector(nin, 11 + k.N));
    const auto g = round_bf16(random_vector(nout, 12 + OC));
    const auto w = round_bf16(random_vector((int64_t)OC * k.IC, 13));
    std::vector<float> ref_dx(nin), ref_dw((int64_t)OC * k.IC, 0.0f);
    matmul_backward_ref(ref_dx.data(), ref_dw.data(), g.data(), x.data(), w.data(), k.N, k.IC, OC);
    DeviceBuffer<bf16> d_x(nin), d_g(nout);
    upload_bf16(d_x, x);
    upload_bf16(d_g, g);
    int first = 0;
    for (int rows : k.rows) {
      const int64_t n = (int64_t)rows * k.IC;
      const std::vector<float> block_ref(ref_dw.begin() + (int64_t)first * k.IC, ref_dw.begin() + (int64_t)first * k.IC + n);
      DeviceBuffer<float> d_dw(n);
      d_dw.poison();  // = must not read it
      mm.weight_gradient(d_dw.ptr, d_g.ptr + first, OC, d_x.ptr, k.N, k.IC, rows, /*accumulate=*/false, 0);
      sync_and_check();
      const std::string wh = " rows " + std::to_string(first) + ".." + std::to_string(first + rows) + " of " +
                             std::to_string(OC) + ", IC=" + std::to_string(k.IC);
      EXPECT_REL_WITHIN(("weight_gradient =" + wh).c_str(), rel_error(d_dw.download(), block_ref), 1e-5);
      mm.weight_gradient(d_dw.ptr, d_g.ptr + first, OC, d_x.ptr, k.N, k.IC, rows, /*accumulate=*/true, 0);
      sync_and_check();
      std::vector<float> twice = block_ref;
      for (float& v : twice) v *= 2;
      EXPECT_REL_WITHIN(("weight_gradient +=" + wh).c_str(), rel_error(d_dw.download(), twice), 1e-5);
      first += rows;
    }
  }
}

TEST(LmHeadCeGpu, FusedChunkedMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  Matmul mm;
  for (const HeadShape s : std::vector<HeadShape>{{24, 576, 49152, 10, true},
                                                   {6, 4096, 32000, 4, true},
                                                   {17, 45, 261, 5, false},
                                                   {1, 45, 261, 7, false},
                                                   {1000, 64, 261, 256, false}}) {
    if (s.preset && small_shapes_only()) continue;
    const int64_t nx = (int64_t)s.N * s.C, nw = (int64_t)s.V * s.C;
    const auto x = round_bf16(random_vector(nx, 10 + s.N + s.C));
    const auto w = round_bf16(random_vector(nw, 11 + s.V, 2.0f / std::sqrt((float)s.C)));
    auto t = random_tokens(s.N, s.V, 12 + s.N);
    int kept = 0;
    for (int n = 0; n < s.N; n++) {
      if (n % 5 == 3) t[n] = kIgnoreIndex;
      kept += t[n] >= 0;
    }
    const float scale = 1.0f / std::max(kept, 1);
    const auto dw0 = round_bf16(random_vector(nw, 13 + s.V, 1e-3f));
    std::vector<float> ref_loss(s.N), ref_dx(nx), ref_dw = dw0;
    lm_head_ce_forward_ref(ref_loss.data(), x.data(), w.data(), t.data(), s.N, s.C, s.V);
    lm_head_ce_backward_ref(ref_dx.data(), ref_dw.data(), x.data(), w.data(), t.data(), scale, s.N, s.C, s.V);
    std::vector<float> em_loss(s.N), em_dx(nx), em_dw32 = dw0, em_dw16 = dw0;
    emulate_head(em_loss, em_dx, em_dw32, em_dw16, x, w, t, scale, s);

    DeviceBuffer<bf16> d_x(nx), d_w(nw), d_dx(nx), d_dw16(nw);
    DeviceBuffer<float> d_loss(s.N), d_dw32(nw);
    DeviceBuffer<int> d_t(s.N);
    const size_t ws_bytes = lm_head_ce_workspace_bytes(s.chunk, s.V);
    DeviceBuffer<bf16> d_ws(ws_bytes / 2);
    upload_bf16(d_x, x);
    upload_bf16(d_w, w);
    d_t.upload(t);
    d_dw32.upload(dw0);
    upload_bf16(d_dw16, dw0);
    d_loss.poison();
    d_dx.poison();
    lm_head_ce_forward_backward(d_loss.ptr, d_dx.ptr, d_dw32.ptr, d_ws.ptr, ws_bytes, d_x.ptr, d_w.ptr, d_t.ptr, scale,
                                s.N, s.C, s.V, s.chunk, mm, 0);
    sync_and_check();
    const std::string wh = " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " V=" + std::to_string(s.V) +
                           " chunk=" + std::to_string(s.chunk);
    const auto loss = d_loss.download();
    EXPECT_REL_WITHIN(("lm_head_ce losses" + wh).c_str(), rel_error(loss, ref_loss),
                      bf16_bound(rel_error(em_loss, ref_loss), 2.0));
    const auto dx = download_float(d_dx);
    EXPECT_REL_WITHIN(("lm_head_ce dinp" + wh).c_str(), rel_error(dx, ref_dx), bf16_bound(rel_error(em_dx, ref_dx), 3.0));
    EXPECT_REL_WITHIN(("lm_head_ce fp32 dweight" + wh).c_str(), rel_error(d_dw32.download(), ref_dw),
                      bf16_bound(rel_error(em_dw32, ref_dw), 3.0));
    for (int n = 0; n < s.N; n++)
      if (t[n] < 0) {
        EXPECT_EQ(loss[n], 0.0f) << "ignored token " << n << wh;
        for (int c = 0; c < s.C; c++) ASSERT_EQ(dx[(int64_t)n * s.C + c], 0.0f) << "ignored token row " << n << wh;
      }
    // bf16 dW (rounded once per chunk) and the frozen head (dW nullptr) give the same losses/dx
    d_loss.poison();
    d_dx.poison();
    lm_head_ce_forward_backward(d_loss.ptr, d_dx.ptr, d_dw16.ptr, d_ws.ptr, ws_bytes, d_x.ptr, d_w.ptr, d_t.ptr, scale,
                                s.N, s.C, s.V, s.chunk, mm, 0);
    sync_and_check();
    EXPECT_REL_WITHIN(("lm_head_ce bf16 dweight" + wh).c_str(), rel_error(download_float(d_dw16), ref_dw),
                      bf16_bound(rel_error(em_dw16, ref_dw), 3.0));
    EXPECT_EQ(rel_error(d_loss.download(), loss), 0.0) << "losses differ between runs" << wh;
    d_dx.poison();
    lm_head_ce_forward_backward(d_loss.ptr, d_dx.ptr, nullptr, d_ws.ptr, ws_bytes, d_x.ptr, d_w.ptr, d_t.ptr, scale, s.N,
                                s.C, s.V, s.chunk, mm, 0);
    sync_and_check();
    EXPECT_EQ(rel_error(download_float(d_dx), dx), 0.0) << "dinp differs with a frozen head" << wh;
    // forward only (evaluation)
    d_loss.poison();
    lm_head_ce_forward(d_loss.ptr, d_ws.ptr, ws_bytes, d_x.ptr, d_w.ptr, d_t.ptr, s.N, s.C, s.V, s.chunk, mm, 0);
    sync_and_check();
    EXPECT_EQ(rel_error(d_loss.download(), loss), 0.0) << "lm_head_ce_forward losses differ" << wh;
  }
}
