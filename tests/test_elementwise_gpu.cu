// GPU SwiGLU and RoPE vs their CPU twins. Baselines emulate PyTorch bf16: SwiGLU F.silu(gate) (bf16) * up (bf16); RoPE as Hugging Face
// computes it in bf16 (cos/sin cast to bf16, q*cos and rotate_half(q)*sin each rounded, then the
// sum rounded). Backward baselines: the twin's result rounded to bf16. RoPE runs plain and with
// llama3 rope_scaling (LLaMA-3.1/3.2's values, and a short original context that puts an odd
// head_dim's frequencies in all three bands), both from rope_inv_freq().
#include <gtest/gtest.h>

#include <cmath>

#include "kernel_test_util.h"
#include "kernels/ref/ops_ref.h"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"
#include "model/config.h"

using namespace owlore;
using namespace owlore::test;

TEST(SwigluGpu, ForwardBackwardMatchTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  struct Shape {
    int N, F;
    bool preset;
  };
  for (const Shape s : std::vector<Shape>{{64, 1536, true}, {16, 11008, true}, {1, 45, false}, {3, 45, false},
                                          {17, 1536, false}, {1000, 45, false}, {1000, 64, false}}) {
    if (s.preset && small_shapes_only()) continue;
    const int64_t nf = (int64_t)s.N * s.F;
    const auto gu = round_bf16(random_vector(2 * nf, 10 + s.N + s.F, 2.0f));
    const auto dout = round_bf16(random_vector(nf, 20 + s.N + s.F));
    std::vector<float> ref(nf), ref_d(2 * nf), torch(nf);
    swiglu_forward_ref(ref.data(), gu.data(), s.N, s.F);
    swiglu_backward_ref(ref_d.data(), dout.data(), gu.data(), s.N, s.F);
    for (int n = 0; n < s.N; n++)
      for (int f = 0; f < s.F; f++) {
        const float g = gu[(int64_t)n * 2 * s.F + f], u = gu[(int64_t)n * 2 * s.F + s.F + f];
        torch[(int64_t)n * s.F + f] = bf16_round(bf16_round(g / (1.0f + std::exp(-g))) * u);
      }
    DeviceBuffer<bf16> d_gu(2 * nf), d_dout(nf), d_out(nf), d_dgu(2 * nf);
    upload_bf16(d_gu, gu);
    upload_bf16(d_dout, dout);
    d_out.poison();
    d_dgu.poison();
    swiglu_forward(d_out.ptr, d_gu.ptr, s.N, s.F, 0);
    swiglu_backward(d_dgu.ptr, d_dout.ptr, d_gu.ptr, s.N, s.F, 0);
    sync_and_check();
    const std::string w = " N=" + std::to_string(s.N) + " F=" + std::to_string(s.F);
    EXPECT_REL_WITHIN(("swiglu_forward" + w).c_str(), rel_error(download_float(d_out), ref),
                      bf16_bound(rel_error(torch, ref), 2.0));
    EXPECT_REL_WITHIN(("swiglu_backward" + w).c_str(), rel_error(download_float(d_dgu), ref_d),
                      bf16_bound(rounding_baseline(ref_d), 3.0));
  }
}

namespace {
// factor 0: plain RoPE; else llama3 scaling with low 1, high 4 and original context orig.
struct RopeFreqs {
  std::vector<double> host;
  std::vector<float> host_f;
  DeviceBuffer<float> device;
  RopeFreqs(int hd, float theta, float factor, int orig) : device(hd / 2) {
    ModelConfig c;
    c.head_dim = hd;
    c.rope_theta = theta;
    if (factor > 0) c.rope_scaling = {RopeScalingType::llama3, factor, 1.0f, 4.0f, orig};
    host = rope_inv_freq(c);
    host_f.assign(host.begin(), host.end());
    device.upload(host_f);
  }
};

// Hugging Face apply_rotary_pos_emb in bf16 on the rotated heads of every row (inv_freq in float32).
std::vector<float> hf_bf16_rope(const std::vector<float>& x, int B, int T, int n_heads, int hd, int row_stride,
                                const std::vector<float>& inv_freqs, int pos_offset) {
  std::vector<float> y = x;
  const int half = hd / 2;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++) {
          const float angle = (float)(pos_offset + t) * inv_freqs[i];
          const float c = bf16_round(std::cos(angle)), s = bf16_round(std::sin(angle));
          const int64_t base = ((int64_t)b * T + t) * row_stride + (int64_t)h * hd;
          const float x1 = x[base + i], x2 = x[base + i + half];
          y[base + i] = bf16_round(bf16_round(x1 * c) + bf16_round(-x2 * s));
          y[base + i + half] = bf16_round(bf16_round(x2 * c) + bf16_round(x1 * s));
        }
  return y;
}
// Only the rotated part of every row (the rest is compared separately).
std::vector<float> rotated_part(const std::vector<float>& x, int BT, int width, int row_stride) {
  std::vector<float> out;
  for (int r = 0; r < BT; r++)
    for (int c = 0; c < width; c++) out.push_back(x[(int64_t)r * row_stride + c]);
  return out;
}
}  // namespace

TEST(RopeGpu, ForwardInPlaceMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  struct Shape {
    int B, T, Hq, Hkv, hd;
    float theta;
    int pos_offset;
    bool preset;
    float factor = 0;  // llama3 rope_scaling when > 0
    int orig = 8192;
  };
  const std::vector<Shape> all = {{2, 32, 9, 3, 64, 1e5f, 0, true},  {1, 16, 32, 32, 128, 1e4f, 0, true},
                                  {1, 1, 1, 1, 64, 1e4f, 7, false},  {3, 17, 2, 1, 10, 1e4f, 3, false},
                                  {1, 1000, 3, 1, 64, 1e4f, 0, false}, {2, 3, 4, 2, 16, 5e5f, 1000, false},
                                  // LLaMA-3.1-8B past its original context, LLaMA-3.2-1B
                                  {1, 16, 32, 8, 128, 5e5f, 9000, true, 8.0f},
                                  {2, 19, 3, 1, 128, 5e5f, 8180, false, 8.0f},
                                  {1, 33, 5, 1, 64, 5e5f, 100, false, 32.0f},
                                  // odd: head_dim 10 (5 pairs), original context 64: all three bands
                                  {3, 17, 2, 1, 10, 1e4f, 3, false, 4.0f, 64},
                                  {2, 300, 3, 1, 14, 1e4f, 50, false, 3.0f, 100}};
  for (const Shape s : all) {
    if (s.preset && small_shapes_only()) continue;
    const int row_stride = (s.Hq + 2 * s.Hkv) * s.hd, n_heads = s.Hq + s.Hkv, BT = s.B * s.T;
    const int64_t n = (int64_t)BT * row_stride;
    const auto x = round_bf16(random_vector(n, 30 + s.T + s.hd));
    std::vector<float> ref = x;
    const RopeFreqs f(s.hd, s.theta, s.factor, s.orig);
    rope_forward_ref(ref.data(), x.data(), s.B, s.T, n_heads, s.hd, row_stride, f.host.data(), s.pos_offset);
    const auto hf = hf_bf16_rope(x, s.B, s.T, n_heads, s.hd, row_stride, f.host_f, s.pos_offset);
    const int width = n_heads * s.hd;
    const auto ref_rot = rotated_part(ref, BT, width, row_stride);
    const double baseline = rel_error(rotated_part(hf, BT, width, row_stride), ref_rot);
    const std::string w = " B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " heads=" +
                          std::to_string(n_heads) + " hd=" + std::to_string(s.hd) +
                          " factor=" + std::to_string(s.factor);

    DeviceBuffer<bf16> d_x(n);
    upload_bf16(d_x, x);
    rope_forward(d_x.ptr, d_x.ptr, s.B, s.T, n_heads, s.hd, row_stride, f.device.ptr, s.pos_offset, 0);  // in place
    sync_and_check();
    const auto got = download_float(d_x);
    EXPECT_REL_WITHIN(("rope_forward" + w).c_str(), rel_error(rotated_part(got, BT, width, row_stride), ref_rot),
                      bf16_bound(baseline, 2.0));
    // v heads untouched
    std::vector<float> v_got, v_ref;
    for (int r = 0; r < BT; r++)
      for (int c = width; c < row_stride; c++) {
        v_got.push_back(got[(int64_t)r * row_stride + c]);
        v_ref.push_back(x[(int64_t)r * row_stride + c]);
      }
    EXPECT_EQ(rel_error(v_got, v_ref), 0.0) << "rope_forward changed heads past n_heads" << w;
  }
}

TEST(RopeGpu, BackwardMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  struct Shape {
    int B, T, H, hd, row_stride;
    float theta;
    int pos_offset;
    bool preset;
    float factor = 0;  // llama3 rope_scaling when > 0
    int orig = 8192;
  };
  for (const Shape s : std::vector<Shape>{{2, 32, 12, 64, 960, 1e5f, 0, true},
                                          {1, 16, 64, 128, 12288, 1e4f, 0, true},
                                          {3, 17, 3, 10, 50, 1e4f, 3, false},
                                          {1, 1000, 4, 64, 384, 1e4f, 5, false},
                                          {1, 16, 40, 128, 6144, 5e5f, 9000, true, 8.0f},
                                          {2, 19, 4, 128, 768, 5e5f, 8180, false, 8.0f},
                                          {1, 33, 6, 64, 448, 5e5f, 100, false, 32.0f},
                                          {3, 17, 3, 10, 50, 1e4f, 3, false, 4.0f, 64},
                                          {2, 300, 4, 14, 86, 1e4f, 50, false, 3.0f, 100}}) {
    if (s.preset && small_shapes_only()) continue;
    const int BT = s.B * s.T;
    const int64_t n = (int64_t)BT * s.row_stride;
    const auto g = round_bf16(random_vector(n, 40 + s.T + s.hd));
    std::vector<float> ref(n);
    const RopeFreqs f(s.hd, s.theta, s.factor, s.orig);
    rope_backward_ref(ref.data(), g.data(), s.B, s.T, s.H, s.hd, s.row_stride, f.host.data(), s.pos_offset);
    DeviceBuffer<bf16> d_g(n), d_dx(n);
    upload_bf16(d_g, g);
    d_dx.poison();
    rope_backward(d_dx.ptr, d_g.ptr, s.B, s.T, s.H, s.hd, s.row_stride, f.device.ptr, s.pos_offset, 0);
    sync_and_check();
    const int width = s.H * s.hd;
    const auto ref_rot = rotated_part(ref, BT, width, s.row_stride);
    const std::string w = " B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " hd=" + std::to_string(s.hd) +
                          " factor=" + std::to_string(s.factor);
    EXPECT_REL_WITHIN(("rope_backward" + w).c_str(),
                      rel_error(rotated_part(download_float(d_dx), BT, width, s.row_stride), ref_rot),
                      bf16_bound(rounding_baseline(ref_rot), 3.0));
  }
}
