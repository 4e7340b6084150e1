// GPU RMSNorm (forward, fused residual + forward, backward with bf16/fp32/no dweight) vs the
// CPU twins. Forward baseline emulates Hugging Face LlamaRMSNorm in bf16: round(w * round(x*r)).
#include <gtest/gtest.h>

#include <cmath>

#include "kernel_test_util.h"
#include "kernels/ref/ops_ref.h"
#include "kernels/rmsnorm.cuh"

using namespace owlore;
using namespace owlore::test;

namespace {
struct Shape {
  int N, C;
  bool preset;
};
std::vector<Shape> shapes() {
  std::vector<Shape> all = {{64, 576, true}, {32, 4096, true}, {1, 45, false},   {3, 45, false},
                            {17, 576, false}, {1000, 64, false}, {17, 1000, false}, {3, 8192, false}};
  std::vector<Shape> out;
  for (auto s : all)
    if (!s.preset || !small_shapes_only()) out.push_back(s);
  return out;
}
constexpr float kEps = 1e-5f;

std::string where(const Shape& s) { return " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C); }

// Hugging Face LlamaRMSNorm in bf16: hidden (fp32) * rstd -> cast to bf16 -> * weight (bf16 op).
std::vector<float> hf_bf16_forward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& rstd,
                                   int N, int C) {
  std::vector<float> y((int64_t)N * C);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      y[(int64_t)n * C + c] = bf16_round(w[c] * bf16_round(x[(int64_t)n * C + c] * rstd[n]));
  return y;
}

void check_forward(const Shape& s, bool fused) {
  const int64_t nc = (int64_t)s.N * s.C;
  const auto a = round_bf16(random_vector(nc, 100 + s.N + s.C, 1.5f));
  const auto b = round_bf16(random_vector(nc, 200 + s.N + s.C, 0.5f));
  auto w = random_vector(s.C, 300 + s.C, 0.1f);
  for (auto& v : w) v += 1.0f;
  w = round_bf16(w);
  std::vector<float> x = a;
  if (fused)
    for (int64_t i = 0; i < nc; i++) x[i] = bf16_round(a[i] + b[i]);
  std::vector<float> ref(nc), ref_rstd(s.N);
  rmsnorm_forward_ref(ref.data(), ref_rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
  const double baseline = rel_error(hf_bf16_forward(x, w, ref_rstd, s.N, s.C), ref);

  DeviceBuffer<bf16> d_a(nc), d_b(nc), d_w(s.C), d_out(nc), d_res(nc);
  DeviceBuffer<float> d_rstd(s.N);
  upload_bf16(d_a, a);
  upload_bf16(d_b, b);
  upload_bf16(d_w, w);
  d_out.poison();
  d_rstd.poison();
  d_res.poison();
  if (fused)
    rmsnorm_residual_forward(d_res.ptr, d_out.ptr, d_rstd.ptr, d_a.ptr, d_b.ptr, d_w.ptr, s.N, s.C, kEps, 0);
  else
    rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_a.ptr, d_w.ptr, s.N, s.C, kEps, 0);
  sync_and_check();
  const std::string name = fused ? "rmsnorm_residual_forward" : "rmsnorm_forward";
  EXPECT_REL_WITHIN((name + " out" + where(s)).c_str(), rel_error(download_float(d_out), ref), bf16_bound(baseline, 2.0));
  EXPECT_REL_WITHIN((name + " rstd" + where(s)).c_str(), rel_error(d_rstd.download(), ref_rstd), 1e-5);
  if (fused) EXPECT_EQ(rel_error(download_float(d_res), x), 0.0) << name << " residual_out" << where(s);
}
}  // namespace

TEST(RmsnormGpu, ForwardMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) check_forward(s, false);
}

TEST(RmsnormGpu, FusedResidualForwardMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) check_forward(s, true);
}

TEST(RmsnormGpu, BackwardMatchesTwinAndIsDeterministic) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) {
    const int64_t nc = (int64_t)s.N * s.C;
    const auto x = round_bf16(random_vector(nc, 400 + s.N + s.C, 1.5f));
    const auto g = round_bf16(random_vector(nc, 500 + s.N + s.C));
    auto w = random_vector(s.C, 600 + s.C, 0.1f);
    for (auto& v : w) v += 1.0f;
    w = round_bf16(w);
    const auto dw0 = round_bf16(random_vector(s.C, 700 + s.C));
    // dinp accumulates (the residual stream's gradient): it starts from dx0, not zero.
    const auto dx0 = round_bf16(random_vector(nc, 800 + s.N + s.C));
    std::vector<float> y(nc), rstd(s.N), ref_dx = dx0, ref_dw = dw0;
    rmsnorm_forward_ref(y.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
    rmsnorm_backward_ref(ref_dx.data(), ref_dw.data(), g.data(), x.data(), w.data(), rstd.data(), s.N, s.C);

    DeviceBuffer<bf16> d_x(nc), d_g(nc), d_w(s.C), d_dx(nc), d_dw(s.C);
    DeviceBuffer<float> d_rstd(s.N), d_dw32(s.C), d_scratch(rmsnorm_backward_scratch_floats(s.N, s.C));
    upload_bf16(d_x, x);
    upload_bf16(d_g, g);
    upload_bf16(d_w, w);
    d_rstd.upload(rstd);

    // bf16 dweight, twice: bit-identical
    std::vector<__nv_bfloat16> first_dw, first_dx;
    for (int run = 0; run < 2; run++) {
      upload_bf16(d_dx, dx0);
      upload_bf16(d_dw, dw0);
      rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_scratch.ptr, d_g.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, s.N, s.C, 0);
      sync_and_check();
      if (run == 0) {
        first_dw = d_dw.download();
        first_dx = d_dx.download();
        EXPECT_REL_WITHIN(("rmsnorm_backward dinp" + where(s)).c_str(), rel_error(to_float(first_dx), ref_dx),
                          bf16_bound(rounding_baseline(ref_dx), 3.0));
        EXPECT_REL_WITHIN(("rmsnorm_backward bf16 dweight" + where(s)).c_str(), rel_error(to_float(first_dw), ref_dw),
                          bf16_bound(rounding_baseline(ref_dw), 3.0));
      } else {
        const auto dw = d_dw.download(), dx = d_dx.download();
        EXPECT_EQ(0, std::memcmp(dw.data(), first_dw.data(), dw.size() * 2)) << "dweight not bit-identical" << where(s);
        EXPECT_EQ(0, std::memcmp(dx.data(), first_dx.data(), dx.size() * 2)) << "dinp not bit-identical" << where(s);
      }
    }
    // fp32 dweight
    d_dw32.upload(dw0);
    upload_bf16(d_dx, dx0);
    rmsnorm_backward(d_dx.ptr, d_dw32.ptr, d_scratch.ptr, d_g.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, s.N, s.C, 0);
    sync_and_check();
    EXPECT_REL_WITHIN(("rmsnorm_backward fp32 dweight" + where(s)).c_str(), rel_error(d_dw32.download(), ref_dw), 1e-5);
    // frozen weight: no dweight, same dinp
    upload_bf16(d_dx, dx0);
    rmsnorm_backward(d_dx.ptr, nullptr, nullptr, d_g.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, s.N, s.C, 0);
    sync_and_check();
    const auto dx = d_dx.download();
    EXPECT_EQ(0, std::memcmp(dx.data(), first_dx.data(), dx.size() * 2)) << "dinp differs without dweight" << where(s);
  }
}
