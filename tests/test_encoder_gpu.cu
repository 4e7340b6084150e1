// GPU token embedding vs its CPU twin (encoder_*_ref): forward exact, backward (bf16 and fp32
// dwte) within the bf16 bound, and bit-identical on a second run (deterministic, no atomics).
#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/encoder.cuh"
#include "kernels/ref/ops_ref.h"

int owlore_kernels_odr_check();  // src/kernels/kernels_odr_check.cu: the same headers in another TU

using namespace owlore;
using namespace owlore::test;

namespace {
struct Shape {
  int N, C, V;
  bool preset;
};
std::vector<Shape> shapes() {
  std::vector<Shape> all = {{64, 576, 49152, true}, {32, 4096, 32000, true}, {1, 45, 261, false},
                            {3, 45, 261, false},    {17, 64, 261, false},    {1000, 45, 261, false},
                            {1000, 64, 17, false}};
  std::vector<Shape> out;
  for (auto s : all)
    if (!s.preset || !small_shapes_only()) out.push_back(s);
  return out;
}
}  // namespace

TEST(EncoderGpu, HeadersLinkFromSeveralTranslationUnits) {
  OWLORE_SKIP_WITHOUT_GPU();
  EXPECT_GT(owlore_kernels_odr_check(), 0);
}

TEST(EncoderGpu, ForwardMatchesTwin) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) {
    const auto wte = round_bf16(random_vector((int64_t)s.V * s.C, 11 + s.N));
    const auto tokens = random_tokens(s.N, s.V, 12 + s.C);
    std::vector<float> ref((int64_t)s.N * s.C);
    encoder_forward_ref(ref.data(), tokens.data(), wte.data(), s.N, s.C, s.V);
    DeviceBuffer<bf16> d_wte(wte.size()), d_out(ref.size());
    DeviceBuffer<int> d_tok(s.N);
    upload_bf16(d_wte, wte);
    d_tok.upload(tokens);
    d_out.poison();
    encoder_forward(d_out.ptr, d_tok.ptr, d_wte.ptr, s.N, s.C, s.V, 0);
    sync_and_check();
    const double err = rel_error(download_float(d_out), ref);
    EXPECT_EQ(err, 0.0) << "encoder_forward N=" << s.N << " C=" << s.C << " V=" << s.V << " rel error " << err;
  }
}

TEST(EncoderGpu, BackwardMatchesTwinAndIsDeterministic) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) {
    const auto dout = round_bf16(random_vector((int64_t)s.N * s.C, 21 + s.N));
    const auto tokens = random_tokens(s.N, s.V, 22 + s.C);
    const auto dwte0 = round_bf16(random_vector((int64_t)s.V * s.C, 23 + s.V, 0.5f));
    std::vector<float> ref = dwte0;
    encoder_backward_ref(ref.data(), dout.data(), tokens.data(), s.N, s.C, s.V);
    DeviceBuffer<bf16> d_dout(dout.size()), d_dwte(ref.size());
    DeviceBuffer<float> d_dwte32(ref.size());
    DeviceBuffer<int> d_tok(s.N);
    const size_t ws_bytes = encoder_backward_workspace_bytes(s.N, s.V);
    DeviceBuffer<char> d_ws(ws_bytes);
    upload_bf16(d_dout, dout);
    d_tok.upload(tokens);
    const std::string where = " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " V=" + std::to_string(s.V);

    // bf16 dwte, twice from the same start: bit-identical
    std::vector<__nv_bfloat16> first;
    for (int run = 0; run < 2; run++) {
      upload_bf16(d_dwte, dwte0);
      encoder_backward(d_dwte.ptr, d_ws.ptr, ws_bytes, d_dout.ptr, d_tok.ptr, s.N, s.C, s.V, 0);
      sync_and_check();
      auto got = d_dwte.download();
      if (run == 0) {
        first = got;
        const double err = rel_error(to_float(got), ref);
        EXPECT_REL_WITHIN(("encoder_backward bf16 dwte" + where).c_str(), err, bf16_bound(rounding_baseline(ref), 3.0));
      } else {
        EXPECT_EQ(0, std::memcmp(first.data(), got.data(), got.size() * sizeof(got[0])))
            << "encoder_backward not bit-identical on a second run" << where;
      }
    }
    // fp32 dwte
    d_dwte32.upload(dwte0);
    encoder_backward(d_dwte32.ptr, d_ws.ptr, ws_bytes, d_dout.ptr, d_tok.ptr, s.N, s.C, s.V, 0);
    sync_and_check();
    EXPECT_REL_WITHIN(("encoder_backward fp32 dwte" + where).c_str(), rel_error(d_dwte32.download(), ref), 1e-5);
  }
}
