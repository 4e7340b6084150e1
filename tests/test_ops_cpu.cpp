// Finite-difference checks of every CPU twin's backward, in double precision, on odd shapes
// (after ggml's test-backend-ops). For an op out = f(x), with a fixed random projection R,
// L = sum(out * R); the backward run with dout = R must equal the central difference of L.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <vector>

#include "base/error.h"
#include "base/tokens.h"
#include "base/rng.h"
#include "kernels/ref/ops_ref.h"
#include "model/config.h"

using namespace owlore;

namespace {

std::vector<double> randn(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> x(n);
  for (auto& v : x) v = rng.normal() * scale;
  return x;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Compares analytic[i] with (L(x+h e_i) - L(x-h e_i)) / 2h over up to max_checks coordinates
// (all of them when the tensor is small, else an evenly spread sample). Returns the relative
// error of the checked gradient vector.
double fd_error(std::vector<double>& x, const std::vector<double>& analytic, const std::function<double()>& loss,
                int max_checks = 400) {
  const double h = 1e-5;
  const int64_t n = (int64_t)x.size();
  const int64_t stride = std::max<int64_t>(1, n / max_checks);
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = loss();
    x[i] = saved - h;
    const double minus = loss();
    x[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    diff += (numeric - analytic[i]) * (numeric - analytic[i]);
    norm += numeric * numeric;
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

constexpr double kFdBound = 1e-6;  // central differences in double at h=1e-5: error ~h^2 * f'''

}  // namespace

TEST(OpsCpu, EncoderBackwardMatchesFiniteDifferences) {
  const int N = 13, C = 7, V = 11;
  std::vector<int> tokens = {3, 5, 3, 0, 10, 3, 7, 7, 1, 2, 9, 5, 3};  // repeats accumulate
  auto wte = randn((int64_t)V * C, 1), R = randn((int64_t)N * C, 2);
  std::vector<double> out(N * C);
  auto loss = [&] {
    encoder_forward_ref(out.data(), tokens.data(), wte.data(), N, C, V);
    return dot(out, R);
  };
  // += semantics: start from a random gradient and subtract it afterwards.
  auto base = randn((int64_t)V * C, 3), dwte = base;
  encoder_backward_ref(dwte.data(), R.data(), tokens.data(), N, C, V);
  for (size_t i = 0; i < dwte.size(); i++) dwte[i] -= base[i];
  const double err = fd_error(wte, dwte, loss);
  EXPECT_LE(err, kFdBound) << "embedding dwte rel error " << err;
}

class RmsNormShapes : public ::testing::TestWithParam<std::pair<int, int>> {};
TEST_P(RmsNormShapes, BackwardMatchesFiniteDifferences) {
  const auto [N, C] = GetParam();
  auto x = randn((int64_t)N * C, 4), w = randn(C, 5), R = randn((int64_t)N * C, 6);
  for (auto& v : w) v += 1.0;
  std::vector<double> out(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward_ref(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    return dot(out, R);
  };
  loss();
  std::vector<double> dx(N * C), base = randn(C, 7), dw = base;
  rmsnorm_backward_ref(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  for (int c = 0; c < C; c++) dw[c] -= base[c];
  const double err_x = fd_error(x, dx, loss), err_w = fd_error(w, dw, loss);
  EXPECT_LE(err_x, kFdBound) << "rmsnorm dinp rel error " << err_x << " at N=" << N << " C=" << C;
  EXPECT_LE(err_w, kFdBound) << "rmsnorm dweight rel error " << err_w << " at N=" << N << " C=" << C;
  // A frozen weight (nullptr) still gives the same input gradient, added to what dinp held.
  const auto dx_before = randn((int64_t)N * C, 8);
  std::vector<double> dx2 = dx_before;
  rmsnorm_backward_ref<double>(dx2.data(), nullptr, R.data(), x.data(), w.data(), rstd.data(), N, C);
  for (int64_t i = 0; i < (int64_t)N * C; i++) EXPECT_NEAR(dx2[i] - dx_before[i], dx[i], 1e-12) << i;
}
INSTANTIATE_TEST_SUITE_P(OddShapes, RmsNormShapes,
                         ::testing::Values(std::make_pair(1, 1), std::make_pair(3, 17), std::make_pair(5, 45)));

TEST(OpsCpu, RopeBackwardMatchesFiniteDifferences) {
  // 3 rotated heads of 6 inside rows of 5 heads (the q|k|v packing), non-zero position offset;
  // plain RoPE and llama3 scaling with a short original context (all three bands at head_dim 6).
  const int B = 2, T = 5, heads = 3, hd = 6, row = 5 * hd, offset = 3;
  for (const bool scaled : {false, true}) {
    ModelConfig c;
    c.head_dim = hd;
    c.rope_theta = 10000.0f;
    if (scaled) c.rope_scaling = {RopeScalingType::llama3, 4.0f, 1.0f, 4.0f, 64};
    const std::vector<double> f = rope_inv_freq(c);
    auto x = randn((int64_t)B * T * row, 11), R = randn((int64_t)B * T * row, 12);
    std::vector<double> out(x.size());
    auto loss = [&] {
      out = x;  // heads that are not rotated pass through unchanged
      rope_forward_ref(out.data(), x.data(), B, T, heads, hd, row, f.data(), offset);
      return dot(out, R);
    };
    std::vector<double> dx = R;  // pass-through heads: gradient is R itself
    rope_backward_ref(dx.data(), R.data(), B, T, heads, hd, row, f.data(), offset);
    const double err = fd_error(x, dx, loss);
    EXPECT_LE(err, kFdBound) << "rope dinp rel error " << err << (scaled ? " (llama3 scaling)" : "");
    // Position 0 is the identity rotation.
    std::vector<double> y(x.size());
    rope_forward_ref(y.data(), x.data(), 1, 1, heads, hd, row, f.data(), 0);
    for (int i = 0; i < heads * hd; i++) EXPECT_DOUBLE_EQ(y[i], x[i]);
  }
}

// transformers' _compute_llama3_parameters (modeling_rope_utils.py), transcribed in the scalar
// type it runs in: inv_freq = 1/theta^(arange(0, d, 2)/d); wavelen = 2π/inv_freq; low
// frequencies (wavelen > orig/low) divided by factor, high ones (wavelen < orig/high) kept, the
// band between interpolated with smooth = (orig/wavelen - low)/(high - low).
template <typename Real>
std::vector<Real> hf_llama3_inv_freq(Real theta, int dim, Real factor, Real low, Real high, Real orig) {
  const Real low_freq_wavelen = orig / low, high_freq_wavelen = orig / high;
  std::vector<Real> out;
  for (int k = 0; k < dim; k += 2) {
    const Real inv_freq = Real(1) / std::pow(theta, (Real)k / (Real)dim);
    const Real wavelen = Real(2 * M_PI) / inv_freq;
    const Real llama = wavelen > low_freq_wavelen ? inv_freq / factor : inv_freq;
    const Real smooth = (orig / wavelen - low) / (high - low);
    const Real smoothed = (1 - smooth) * llama / factor + smooth * llama;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    out.push_back(medium ? smoothed : llama);
  }
  return out;
}

ModelConfig rope_config(int hd, float theta, float factor, int orig) {
  ModelConfig c;
  c.head_dim = hd;
  c.rope_theta = theta;
  if (factor > 0) c.rope_scaling = {RopeScalingType::llama3, factor, 1.0f, 4.0f, orig};
  return c;
}

TEST(RopeScaling, Llama31FrequenciesMatchTransformers) {
  // LLaMA-3.1-8B: theta 5e5, head_dim 128, factor 8, low 1, high 4, original context 8192.
  const ModelConfig c = rope_config(128, 500000.0f, 8.0f, 8192);
  const std::vector<double> got = rope_inv_freq(c), plain = rope_inv_freq(rope_config(128, 500000.0f, 0, 0));
  const auto want = hf_llama3_inv_freq<double>(500000.0, 128, 8.0, 1.0, 4.0, 8192.0);
  const auto want32 = hf_llama3_inv_freq<float>(500000.0f, 128, 8.0f, 1.0f, 4.0f, 8192.0f);  // as torch runs it
  ASSERT_EQ(got.size(), 64u);
  int kept = 0, divided = 0, between = 0;
  for (int i = 0; i < 64; i++) {
    EXPECT_NEAR(got[i], want[i], 1e-14 * want[i]) << i;
    EXPECT_NEAR((float)got[i], want32[i], 4e-7 * want32[i]) << i;  // a few float ulps
    if (got[i] == plain[i]) kept++;
    else if (std::abs(got[i] - plain[i] / 8) <= 1e-15 * plain[i]) divided++;
    else {
      between++;
      EXPECT_TRUE(got[i] < plain[i] && got[i] > plain[i] / 8) << i;
    }
  }
  // wavelength 2π·5e5^(i/64) < 2048 for i <= 28, > 8192 for i >= 35.
  EXPECT_EQ(kept, 29);
  EXPECT_EQ(between, 6);
  EXPECT_EQ(divided, 29);
}

TEST(RopeScaling, OddHeadDimsAndLlama32MatchTransformers) {
  struct Case {
    int hd;
    float theta, factor;
    int orig;
  };
  // head_dim 10 and 94 (odd pair counts) with short original contexts, so that each band holds some
  // pairs; LLaMA-3.2-1B (head_dim 64, factor 32).
  for (const Case k : {Case{10, 10000.0f, 4.0f, 64}, Case{94, 10000.0f, 3.0f, 1000}, Case{64, 500000.0f, 32.0f, 8192}}) {
    const std::vector<double> got = rope_inv_freq(rope_config(k.hd, k.theta, k.factor, k.orig));
    const auto want = hf_llama3_inv_freq<double>(k.theta, k.hd, k.factor, 1.0, 4.0, k.orig);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) EXPECT_NEAR(got[i], want[i], 1e-14 * want[i]) << k.hd << " " << i;
  }
  // Unscaled: theta^(-2i/d).
  const std::vector<double> plain = rope_inv_freq(rope_config(10, 10000.0f, 0, 0));
  for (int i = 0; i < 5; i++) EXPECT_NEAR(plain[i], std::pow(10000.0, -2.0 * i / 10), 1e-15) << i;
}

TEST(RopeScaling, RotatedQkMatchTransformersFrequencies) {
  // q|k|v rows of LLaMA-3.1's head_dim past the original context (positions 8190..8196), and an
  // odd head_dim: the rotation is HF's rotate-half with HF's frequencies.
  for (const auto& [hd, factor, orig, offset] :
       {std::tuple{128, 8.0f, 8192, 8190}, std::tuple{10, 4.0f, 64, 60}}) {
    const ModelConfig c = rope_config(hd, 500000.0f, factor, orig);
    const int B = 2, T = 7, Hq = 3, Hkv = 1, row = (Hq + 2 * Hkv) * hd, half = hd / 2;
    const std::vector<double> f = rope_inv_freq(c);
    const auto hf = hf_llama3_inv_freq<double>(500000.0, hd, factor, 1.0, 4.0, orig);
    const auto x = randn((int64_t)B * T * row, 21);
    std::vector<double> y = x;
    rope_forward_ref(y.data(), x.data(), B, T, Hq + Hkv, hd, row, f.data(), offset);
    double max_err = 0, max_change_vs_plain = 0;
    const std::vector<double> plain_f = rope_inv_freq(rope_config(hd, 500000.0f, 0, 0));
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq + 2 * Hkv; h++)
          for (int i = 0; i < half; i++) {
            const int64_t at = ((int64_t)b * T + t) * row + (int64_t)h * hd + i;
            const double x1 = x[at], x2 = x[at + half];
            double want1 = x1, want2 = x2;  // v heads: untouched
            if (h < Hq + Hkv) {
              const double a = (double)(offset + t) * hf[i];
              want1 = x1 * std::cos(a) - x2 * std::sin(a);
              want2 = x2 * std::cos(a) + x1 * std::sin(a);
              const double p = (double)(offset + t) * plain_f[i];
              max_change_vs_plain = std::max(max_change_vs_plain, std::abs(x1 * std::cos(p) - x2 * std::sin(p) - want1));
            }
            max_err = std::max({max_err, std::abs(y[at] - want1), std::abs(y[at + half] - want2)});
          }
    EXPECT_LT(max_err, 1e-9) << "head_dim " << hd;
    EXPECT_GT(max_change_vs_plain, 0.1) << "head_dim " << hd << ": scaling should change the rotation";
  }
}

TEST(RopeScaling, ValidateRefusesBadScaling) {
  ModelConfig c = preset_config("llama3.1-8b");
  c.validate();
  c.rope_scaling.high_freq_factor = 1.0f;  // = low: the smooth band divides by zero
  EXPECT_THROW(c.validate(), Error);
  c = preset_config("llama3.1-8b");
  c.rope_scaling.original_max_pos = 0;
  EXPECT_THROW(c.validate(), Error);
}

struct AttentionShape {
  int B, T, Hq, Hkv, hd;
};
class AttentionShapes : public ::testing::TestWithParam<AttentionShape> {};
TEST_P(AttentionShapes, BackwardMatchesFiniteDifferences) {
  const auto s = GetParam();
  const int row = (s.Hq + 2 * s.Hkv) * s.hd;
  auto qkv = randn((int64_t)s.B * s.T * row, 13), R = randn((int64_t)s.B * s.T * s.Hq * s.hd, 14);
  std::vector<double> out(R.size()), lse((int64_t)s.B * s.Hq * s.T);
  auto loss = [&] {
    attention_forward_ref(out.data(), lse.data(), qkv.data(), s.B, s.T, s.Hq, s.Hkv, s.hd);
    return dot(out, R);
  };
  loss();
  std::vector<double> dqkv(qkv.size());
  attention_backward_ref(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.Hq, s.Hkv, s.hd);
  const double err = fd_error(qkv, dqkv, loss);
  EXPECT_LE(err, kFdBound) << "attention dqkv rel error " << err << " at B=" << s.B << " T=" << s.T
                           << " Hq=" << s.Hq << " Hkv=" << s.Hkv << " hd=" << s.hd;
  // The first position attends only to itself: its output is its own value vector.
  loss();  // fd_error left `out` at a perturbed input
  for (int i = 0; i < s.hd; i++) EXPECT_NEAR(out[i], qkv[(s.Hq + s.Hkv) * s.hd + i], 1e-12);
}
INSTANTIATE_TEST_SUITE_P(GqaRatios, AttentionShapes,
                         ::testing::Values(AttentionShape{1, 1, 3, 1, 5}, AttentionShape{2, 7, 3, 3, 5},
                                           AttentionShape{1, 9, 6, 2, 3}, AttentionShape{1, 5, 8, 2, 4},
                                           AttentionShape{1, 6, 8, 1, 3}));

TEST(OpsCpu, SwigluBackwardMatchesFiniteDifferences) {
  const int N = 5, F = 13;
  auto gu = randn((int64_t)N * 2 * F, 15, 2.0), R = randn((int64_t)N * F, 16);
  std::vector<double> out(N * F), dgu(gu.size());
  auto loss = [&] {
    swiglu_forward_ref(out.data(), gu.data(), N, F);
    return dot(out, R);
  };
  swiglu_backward_ref(dgu.data(), R.data(), gu.data(), N, F);
  const double err = fd_error(gu, dgu, loss);
  EXPECT_LE(err, kFdBound) << "swiglu dgate_up rel error " << err;
}

TEST(OpsCpu, MatmulBackwardMatchesFiniteDifferences) {
  const int N = 7, IC = 13, OC = 9;
  auto x = randn((int64_t)N * IC, 17), w = randn((int64_t)OC * IC, 18), R = randn((int64_t)N * OC, 19);
  std::vector<double> out(N * OC), dx(x.size());
  auto loss = [&] {
    matmul_forward_ref(out.data(), x.data(), w.data(), N, IC, OC);
    return dot(out, R);
  };
  auto base = randn(w.size(), 20), dw = base;
  matmul_backward_ref(dx.data(), dw.data(), R.data(), x.data(), w.data(), N, IC, OC);
  for (size_t i = 0; i < dw.size(); i++) dw[i] -= base[i];
  EXPECT_LE(fd_error(x, dx, loss), kFdBound);
  EXPECT_LE(fd_error(w, dw, loss), kFdBound);
}

TEST(OpsCpu, LmHeadCrossEntropyBackwardMatchesFiniteDifferences) {
  const int N = 7, C = 9, V = 13;
  std::vector<int> targets = {3, kIgnoreIndex, 12, 0, 5, kIgnoreIndex, 3};
  auto x = randn((int64_t)N * C, 21), w = randn((int64_t)V * C, 22);
  const double scale = 1.0 / 5;  // mean over the 5 kept targets
  std::vector<double> losses(N), dx(x.size());
  auto loss = [&] {
    lm_head_ce_forward_ref(losses.data(), x.data(), w.data(), targets.data(), N, C, V);
    double s = 0;
    for (double l : losses) s += l * scale;
    return s;
  };
  loss();
  EXPECT_EQ(losses[1], 0.0);
  auto base = randn(w.size(), 23), dw = base;
  lm_head_ce_backward_ref(dx.data(), dw.data(), x.data(), w.data(), targets.data(), scale, N, C, V);
  for (size_t i = 0; i < dw.size(); i++) dw[i] -= base[i];
  EXPECT_LE(fd_error(x, dx, loss), kFdBound);
  EXPECT_LE(fd_error(w, dw, loss), kFdBound);
  for (int c = 0; c < C; c++) EXPECT_EQ(dx[1 * C + c], 0.0) << "ignored target must get no gradient";
}

TEST(OpsCpu, AdamWMatchesTheFormulaOverSeveralSteps) {
  // An independent transcription of torch.optim.AdamW, step by step.
  const int64_t n = 11;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, clip_scale = 0.5;
  auto p = randn(n, 24), m = std::vector<double>(n, 0.0), v = m;
  auto p_ref = p, m_ref = m, v_ref = v;
  for (int step = 1; step <= 4; step++) {
    auto g = randn(n, 100 + step);
    adamw_ref(p.data(), m.data(), v.data(), g.data(), n, lr, b1, b2, eps, wd, step, clip_scale);
    for (int64_t i = 0; i < n; i++) {
      const double gi = g[i] * clip_scale;
      p_ref[i] *= 1 - lr * wd;
      m_ref[i] = b1 * m_ref[i] + (1 - b1) * gi;
      v_ref[i] = b2 * v_ref[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(v_ref[i]) / std::sqrt(1 - std::pow(b2, step)) + eps;
      p_ref[i] -= lr / (1 - std::pow(b1, step)) * m_ref[i] / denom;
    }
  }
  for (int64_t i = 0; i < n; i++) {
    EXPECT_NEAR(m[i], m_ref[i], 1e-14);
    EXPECT_NEAR(v[i], v_ref[i], 1e-14);
    // torch puts eps outside the bias-corrected sqrt the same way; equal up to rounding.
    EXPECT_NEAR(p[i], p_ref[i], 1e-12) << "param " << i;
  }
}
