// GPU AdamW vs adamw_ref: fp32 moments to 1e-5, the bf16 weight within one bf16 spacing of the
// twin's fp32 weight (stochastic rounding), fp32 master weights, bf16 moments, fp32 gradients and
// the device clip factor; bit-identical reruns with one seed; unbiased stochastic rounding; and
// the deterministic squared-norm reduction vs sum_squares_ref.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>

#include "kernel_test_util.h"
#include "kernels/adamw.cuh"
#include "kernels/ref/ops_ref.h"

using namespace owlore;
using namespace owlore::test;

namespace {
constexpr float kLr = 1e-3f, kB1 = 0.9f, kB2 = 0.999f, kEpsAdam = 1e-8f, kWd = 0.1f;

std::vector<int64_t> sizes() {
  std::vector<int64_t> s = {1, 3, 17, 1000, 4099};
  if (!small_shapes_only()) {
    s.push_back(576 * 1536);
    s.push_back((1 << 20) + 8);
  }
  return s;
}

// Every element within one bf16 spacing of the fp32 reference (stochastic rounding picks one of
// the two neighbours), allowing for the fp32 rounding of the update itself (absolute, relative to
// the largest element: matters only where the result cancels to near zero). Returns the count of
// violations.
int64_t outside_one_ulp(const std::vector<float>& got, const std::vector<float>& ref) {
  float max_abs = 0.0f;
  for (float x : ref) max_abs = std::max(max_abs, std::fabs(x));
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); i++)
    if (!(std::fabs(got[i] - ref[i]) <= bf16_ulp(ref[i]) * 1.001f + 4e-7f * max_abs)) bad++;
  return bad;
}

// The relative error stochastic rounding is expected to have on ref: each x lies a fraction f of
// the way between its bf16 neighbours lo and hi (spacing s), rounds to hi with probability f, so
// E[err^2] = s^2 f (1-f). The "2x PyTorch bf16" rule does not apply here: PyTorch's bf16 AdamW
// rounds to nearest and drops sub-spacing updates, which is exactly what stochastic rounding
// avoids (round-to-nearest error ~ |update|, stochastic ~ sqrt(s |update|)).
double sr_expected_rel_error(const std::vector<float>& ref) {
  double err2 = 0.0, norm2 = 0.0;
  for (float x : ref) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    bits &= 0xFFFF0000u;
    float lo;
    std::memcpy(&lo, &bits, 4);
    const double s = bf16_ulp(lo == 0.0f ? x : lo), f = (std::fabs((double)x) - std::fabs((double)lo)) / s;
    err2 += s * s * f * (1.0 - f);
    norm2 += (double)x * x;
  }
  return std::sqrt(err2 / norm2);
}

struct State {
  std::vector<float> p, m, v, g;
};
State random_state(int64_t n, uint64_t seed, int step) {
  State s;
  s.p = round_bf16(random_vector(n, seed, 0.5f));
  s.g = round_bf16(random_vector(n, seed + 1, 0.01f));
  s.m = random_vector(n, seed + 2, 0.001f);
  s.v = random_vector(n, seed + 3, 0.001f);
  for (auto& x : s.v) x = x * x + 1e-8f;
  if (step == 1) {  // a fresh optimizer has zero moments; keep them random otherwise
    std::fill(s.m.begin(), s.m.end(), 0.0f);
    std::fill(s.v.begin(), s.v.end(), 0.0f);
  }
  return s;
}
}  // namespace

TEST(AdamwGpu, Fp32MomentsStochasticRoundingMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const int64_t n : sizes()) {
    const int step = 7;
    const State s = random_state(n, 1000 + n, step);
    std::vector<float> p = s.p, m = s.m, v = s.v;
    adamw_ref(p.data(), m.data(), v.data(), s.g.data(), n, kLr, kB1, kB2, kEpsAdam, kWd, step, 1.0f);
    DeviceBuffer<bf16> d_p(n), d_g(n);
    DeviceBuffer<float> d_m(n), d_v(n);
    upload_bf16(d_p, s.p);
    upload_bf16(d_g, s.g);
    d_m.upload(s.m);
    d_v.upload(s.v);
    adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_g.ptr, n, kLr, kB1, kB2, kEpsAdam, kWd, step, 1.0f, nullptr,
                 1234u, 0);
    sync_and_check();
    const std::string w = " n=" + std::to_string(n);
    EXPECT_REL_WITHIN(("adamw m" + w).c_str(), rel_error(d_m.download(), m), 1e-5);
    EXPECT_REL_WITHIN(("adamw v" + w).c_str(), rel_error(d_v.download(), v), 1e-5);
    const auto got = download_float(d_p);
    EXPECT_EQ(outside_one_ulp(got, p), 0) << "adamw bf16 weight further than one bf16 spacing from the twin" << w;
    // the error stochastic rounding should have (statistical: large n only), 1.5x
    if (n >= 1000)
      EXPECT_REL_WITHIN(("adamw bf16 weight (SR)" + w).c_str(), rel_error(got, p), 1.5 * sr_expected_rel_error(p));
  }
}

TEST(AdamwGpu, MasterWeightsFp32GradAndDeviceClipFactor) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const int64_t n : sizes()) {
    const int step = 3;
    const State s = random_state(n, 2000 + n, step);
    const auto master0 = random_vector(n, 2100 + n, 0.5f);  // not on the bf16 grid
    const auto g32 = random_vector(n, 2200 + n, 0.01f);
    const float host_scale = 0.5f, device_scale = 0.7f;
    std::vector<float> p = master0, m = s.m, v = s.v;
    adamw_ref(p.data(), m.data(), v.data(), g32.data(), n, kLr, kB1, kB2, kEpsAdam, kWd, step, host_scale * device_scale);
    DeviceBuffer<bf16> d_p(n);
    DeviceBuffer<float> d_m(n), d_v(n), d_master(n), d_g(n), d_scale(1);
    d_p.poison();
    d_master.upload(master0);
    d_g.upload(g32);
    d_m.upload(s.m);
    d_v.upload(s.v);
    d_scale.upload({device_scale});
    adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, d_master.ptr, d_g.ptr, n, kLr, kB1, kB2, kEpsAdam, kWd, step, host_scale,
                 d_scale.ptr, 99u, 0);
    sync_and_check();
    const std::string w = " n=" + std::to_string(n);
    const auto master = d_master.download();
    EXPECT_REL_WITHIN(("adamw master" + w).c_str(), rel_error(master, p), 1e-5);
    EXPECT_REL_WITHIN(("adamw m (master)" + w).c_str(), rel_error(d_m.download(), m), 1e-5);
    EXPECT_REL_WITHIN(("adamw v (master)" + w).c_str(), rel_error(d_v.download(), v), 1e-5);
    EXPECT_EQ(rel_error(download_float(d_p), round_bf16(master)), 0.0) << "bf16 weight != rn(master)" << w;
  }
}

TEST(AdamwGpu, Bf16MomentsMatchTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const int64_t n : sizes()) {
    const int step = 5;
    State s = random_state(n, 3000 + n, step);
    s.m = round_bf16(s.m);
    s.v = round_bf16(s.v);
    std::vector<float> p = s.p, m = s.m, v = s.v;
    adamw_ref(p.data(), m.data(), v.data(), s.g.data(), n, kLr, kB1, kB2, kEpsAdam, kWd, step, 1.0f);
    DeviceBuffer<bf16> d_p(n), d_g(n), d_m(n), d_v(n);
    upload_bf16(d_p, s.p);
    upload_bf16(d_g, s.g);
    upload_bf16(d_m, s.m);
    upload_bf16(d_v, s.v);
    adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_g.ptr, n, kLr, kB1, kB2, kEpsAdam, kWd, step, 1.0f, nullptr, 7u, 0);
    sync_and_check();
    const std::string w = " n=" + std::to_string(n);
    const auto gm = download_float(d_m), gv = download_float(d_v);
    EXPECT_EQ(outside_one_ulp(gm, m), 0) << "bf16 m further than one bf16 spacing" << w;
    EXPECT_EQ(outside_one_ulp(gv, v), 0) << "bf16 v further than one bf16 spacing" << w;
    if (n >= 1000) {
      EXPECT_REL_WITHIN(("adamw bf16 m (SR)" + w).c_str(), rel_error(gm, m), 1.5 * sr_expected_rel_error(m) + 1e-6);
      EXPECT_REL_WITHIN(("adamw bf16 v (SR)" + w).c_str(), rel_error(gv, v), 1.5 * sr_expected_rel_error(v) + 1e-6);
      EXPECT_REL_WITHIN(("adamw bf16 weight (bf16 moments, SR)" + w).c_str(), rel_error(download_float(d_p), p),
                        1.5 * sr_expected_rel_error(p));
    }
    EXPECT_EQ(outside_one_ulp(download_float(d_p), p), 0) << "bf16 weight further than one bf16 spacing" << w;
  }
}

TEST(AdamwGpu, SameSeedIsBitIdenticalOtherSeedDiffers) {
  OWLORE_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;
  const State s = random_state(n, 4000, 11);
  std::vector<std::vector<__nv_bfloat16>> results;
  for (uint32_t seed : {42u, 42u, 43u}) {
    DeviceBuffer<bf16> d_p(n), d_g(n), d_m(n), d_v(n);
    upload_bf16(d_p, s.p);
    upload_bf16(d_g, s.g);
    upload_bf16(d_m, s.m);
    upload_bf16(d_v, s.v);
    adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_g.ptr, n, kLr, kB1, kB2, kEpsAdam, kWd, 11, 1.0f, nullptr, seed, 0);
    sync_and_check();
    auto p = d_p.download(), m = d_m.download(), v = d_v.download();
    p.insert(p.end(), m.begin(), m.end());
    p.insert(p.end(), v.begin(), v.end());
    results.push_back(p);
  }
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * 2)) << "same seed, different bits";
  EXPECT_NE(0, std::memcmp(results[0].data(), results[2].data(), results[0].size() * 2)) << "seed has no effect";
}

TEST(AdamwGpu, StochasticRoundingIsUnbiased) {
  OWLORE_SKIP_WITHOUT_GPU();
  // Every element starts at 1.0 with the same gradient: all land on the same fp32 value p between
  // two bf16 neighbours; the mean over the draws must be p within 5 standard errors.
  const int64_t n = 1 << 20;
  const float lr = 0.3f / 256.0f;  // moves 1.0 by 0.3 of the bf16 spacing below 1 (2^-8)
  std::vector<float> p(n, 1.0f), m(n, 0.0f), v(n, 0.0f), g(n, bf16_round(0.02f));
  std::vector<float> ref_p(1, 1.0f), ref_m(1, 0.0f), ref_v(1, 0.0f);
  adamw_ref(ref_p.data(), ref_m.data(), ref_v.data(), g.data(), 1, lr, kB1, kB2, kEpsAdam, 0.0f, 1, 1.0f);
  DeviceBuffer<bf16> d_p(n), d_g(n);
  DeviceBuffer<float> d_m(n), d_v(n);
  upload_bf16(d_p, p);
  upload_bf16(d_g, g);
  d_m.upload(m);
  d_v.upload(v);
  adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_g.ptr, n, lr, kB1, kB2, kEpsAdam, 0.0f, 1, 1.0f, nullptr, 5u, 0);
  sync_and_check();
  const auto got = download_float(d_p);
  double mean = 0.0;
  int64_t up = 0;
  for (float x : got) {
    mean += x;
    up += x == 1.0f;
  }
  mean /= n;
  const double spacing = 1.0 / 256.0, lo = 1.0 - spacing;
  const double f = (ref_p[0] - lo) / spacing;  // probability of rounding up
  const double stderr_mean = spacing * std::sqrt(f * (1.0 - f) / n);
  EXPECT_GT(up, 0);
  EXPECT_LT(up, n);
  EXPECT_NEAR(mean, ref_p[0], 5.0 * stderr_mean) << "mean of stochastic rounding " << mean << " vs " << ref_p[0]
                                                 << " (fraction rounded up " << (double)up / n << ", expected " << f << ")";
}

TEST(AdamwGpu, SumSquaresDeterministicMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  std::vector<int64_t> ns = {1, 3, 17, 1000, 4099};
  if (!small_shapes_only()) ns.push_back((1 << 22) + 5);
  for (const int64_t n : ns) {
    const auto x = round_bf16(random_vector(n, 5000 + n, 0.01f));
    const double ref = sum_squares_ref(x.data(), n);
    DeviceBuffer<bf16> d_x(n);
    DeviceBuffer<float> d_x32(n), d_out(1), d_scratch(sum_squares_scratch_floats());
    upload_bf16(d_x, x);
    d_x32.upload(x);
    d_out.poison();
    sum_squares(d_out.ptr, d_scratch.ptr, d_x.ptr, n, false, 0);
    sync_and_check();
    const float a = d_out.download()[0];
    sum_squares(d_out.ptr, d_scratch.ptr, d_x.ptr, n, false, 0);
    sync_and_check();
    const float b = d_out.download()[0];
    const std::string w = " n=" + std::to_string(n);
    EXPECT_EQ(std::memcmp(&a, &b, 4), 0) << "sum_squares not bit-identical" << w;
    EXPECT_LE(std::fabs(a - ref) / ref, 1e-5) << "sum_squares bf16 " << a << " vs " << ref << w;
    // fp32 input, accumulated on top of the bf16 result: 2x
    sum_squares(d_out.ptr, d_scratch.ptr, d_x32.ptr, n, true, 0);
    sync_and_check();
    const float c = d_out.download()[0];
    EXPECT_LE(std::fabs(c - 2.0 * ref) / (2.0 * ref), 1e-5) << "sum_squares accumulate fp32 " << c << w;
  }
}

// A sparse gradient (rows of the tokens that occurred, encoder_backward_rows) steps every row as
// the dense update with zero rows does: bit-identical weights and moments (the same math, the same
// rounding bits by element index), fp32 and bf16 moments, vector (row 64) and scalar (row 45) paths.
TEST(AdamwGpu, SparseRowsStepLikeTheDenseGradient) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const int row_len : {64, 45}) {
    const int n_rows = 37;
    const int64_t n = (int64_t)n_rows * row_len;
    const State s = random_state(n, 4000 + row_len, 4);
    // rows 0, 3, 6, ... have a gradient, stored in reverse order; the others are zero
    std::vector<float> dense(n, 0.0f), rows;
    std::vector<int> row_of(n_rows, 0);
    int stored = 0;
    for (int r = n_rows - 1; r >= 0; r--)
      if (r % 3 == 0) {
        row_of[r] = 1 + stored++;
        for (int c = 0; c < row_len; c++) rows.push_back(s.g[(int64_t)r * row_len + c]);
        std::copy(s.g.begin() + (int64_t)r * row_len, s.g.begin() + (int64_t)(r + 1) * row_len,
                  dense.begin() + (int64_t)r * row_len);
      }
    DeviceBuffer<float> d_dense(n), d_rows(rows.size());
    DeviceBuffer<int> d_row_of(n_rows);
    d_dense.upload(dense);
    d_rows.upload(rows);
    d_row_of.upload(row_of);
    auto run = [&](auto moment_tag, bool sparse) {
      using TM = decltype(moment_tag);
      DeviceBuffer<bf16> d_p(n);
      DeviceBuffer<TM> d_m(n), d_v(n);
      upload_bf16(d_p, s.p);
      if constexpr (sizeof(TM) == 2) {
        upload_bf16(d_m, round_bf16(s.m));
        upload_bf16(d_v, round_bf16(s.v));
      } else {
        d_m.upload(s.m);
        d_v.upload(s.v);
      }
      if (sparse)
        adamw_update_rows(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_rows.ptr, d_row_of.ptr, row_len, n, kLr, kB1, kB2, kEpsAdam,
                          kWd, 4, 0.8f, nullptr, 99u, 0);
      else
        adamw_update(d_p.ptr, d_m.ptr, d_v.ptr, nullptr, d_dense.ptr, n, kLr, kB1, kB2, kEpsAdam, kWd, 4, 0.8f, nullptr,
                     99u, 0);
      sync_and_check();
      return std::make_tuple(d_p.download(), d_m.download(), d_v.download());
    };
    const std::string w = " row_len=" + std::to_string(row_len);
    {
      const auto [p1, m1, v1] = run(float{}, false);
      const auto [p2, m2, v2] = run(float{}, true);
      EXPECT_EQ(0, std::memcmp(p1.data(), p2.data(), n * sizeof(bf16))) << "fp32 moments: weights" << w;
      EXPECT_EQ(m1, m2) << "fp32 m" << w;
      EXPECT_EQ(v1, v2) << "fp32 v" << w;
    }
    {
      const auto [p1, m1, v1] = run(bf16{}, false);
      const auto [p2, m2, v2] = run(bf16{}, true);
      EXPECT_EQ(0, std::memcmp(p1.data(), p2.data(), n * sizeof(bf16))) << "bf16 moments: weights" << w;
      EXPECT_EQ(0, std::memcmp(m1.data(), m2.data(), n * sizeof(bf16))) << "bf16 m" << w;
      EXPECT_EQ(0, std::memcmp(v1.data(), v2.data(), n * sizeof(bf16))) << "bf16 v" << w;
    }
  }
}
