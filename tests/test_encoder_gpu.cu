// GPU token embedding vs its CPU twin (encoder_*_ref): forward exact, backward (bf16 and fp32
// dwte) within the bf16 bound, and bit-identical on a second run (deterministic, no atomics).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

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

// The sparse form: two micro-batches (overlapping token sets) into rows and a row map, against the
// dense fp32 gradient of both. The first batch's tokens take rows 0.. in token order, the second's
// new tokens the next ones; every token with a gradient has exactly its dense row, the others none;
// the row count is the number of distinct tokens. Bit-identical when repeated.
TEST(EncoderGpu, SparseRowsMatchTheDenseGradient) {
  OWLORE_SKIP_WITHOUT_GPU();
  for (const Shape s : shapes()) {
    const auto dout1 = round_bf16(random_vector((int64_t)s.N * s.C, 31 + s.N));
    const auto dout2 = round_bf16(random_vector((int64_t)s.N * s.C, 32 + s.N));
    const auto tokens1 = random_tokens(s.N, s.V, 33 + s.C), tokens2 = random_tokens(s.N, s.V, 34 + s.C);
    std::vector<float> dense((int64_t)s.V * s.C, 0.0f);
    encoder_backward_ref(dense.data(), dout1.data(), tokens1.data(), s.N, s.C, s.V);
    encoder_backward_ref(dense.data(), dout2.data(), tokens2.data(), s.N, s.C, s.V);
    const int capacity = std::min(s.V, 2 * s.N);
    DeviceBuffer<bf16> d_dout1(dout1.size()), d_dout2(dout2.size());
    DeviceBuffer<int> d_tok1(s.N), d_tok2(s.N), d_row_of(s.V + 1);
    DeviceBuffer<float> d_rows((int64_t)capacity * s.C);
    const size_t ws_bytes = encoder_backward_workspace_bytes(s.N, s.V);
    DeviceBuffer<char> d_ws(ws_bytes);
    upload_bf16(d_dout1, dout1);
    upload_bf16(d_dout2, dout2);
    d_tok1.upload(tokens1);
    d_tok2.upload(tokens2);
    const std::string where = " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " V=" + std::to_string(s.V);
    std::vector<float> first_rows;
    for (int run = 0; run < 2; run++) {
      CUDA_CHECK(cudaMemset(d_rows.ptr, 0, (size_t)capacity * s.C * sizeof(float)));
      CUDA_CHECK(cudaMemset(d_row_of.ptr, 0, (size_t)(s.V + 1) * sizeof(int)));
      encoder_backward_rows(d_rows.ptr, d_row_of.ptr, capacity, d_ws.ptr, ws_bytes, d_dout1.ptr, d_tok1.ptr, s.N, s.C,
                            s.V, 0);
      encoder_backward_rows(d_rows.ptr, d_row_of.ptr, capacity, d_ws.ptr, ws_bytes, d_dout2.ptr, d_tok2.ptr, s.N, s.C,
                            s.V, 0);
      sync_and_check();
      const auto rows = d_rows.download();
      const auto row_of = d_row_of.download();
      if (run == 1) {
        EXPECT_EQ(0, std::memcmp(rows.data(), first_rows.data(), rows.size() * sizeof(float))) << "not bit-identical" << where;
        continue;
      }
      first_rows = rows;
      // expected rows: batch 1's distinct tokens in order, then batch 2's new ones in order
      std::vector<int> expected_row(s.V, -1);
      int next = 0;
      for (const auto* tokens : {&tokens1, &tokens2}) {
        std::vector<int> sorted = *tokens;
        std::sort(sorted.begin(), sorted.end());
        for (size_t i = 0; i < sorted.size(); i++)
          if ((i == 0 || sorted[i] != sorted[i - 1]) && expected_row[sorted[i]] < 0) expected_row[sorted[i]] = next++;
      }
      ASSERT_EQ(row_of[s.V], next) << "rows in use" << where;
      std::vector<float> scattered((int64_t)s.V * s.C, 0.0f);
      int wrong_rows = 0;
      for (int v = 0; v < s.V; v++) {
        wrong_rows += row_of[v] != expected_row[v] + 1;
        if (row_of[v] > 0)
          std::copy(rows.begin() + (int64_t)(row_of[v] - 1) * s.C, rows.begin() + (int64_t)row_of[v] * s.C,
                    scattered.begin() + (int64_t)v * s.C);
      }
      EXPECT_EQ(wrong_rows, 0) << "tokens with another row than token order gives" << where;
      EXPECT_REL_WITHIN(("encoder_backward_rows" + where).c_str(), rel_error(scattered, dense), 1e-5);
      // Too few rows: the first token of the order gets the only one, the others are marked -1
      // (dropped), the count says how many rows were needed — each distinct token once, also when
      // a dropped token of the first batch comes again in the second — and nothing is written past
      // the rows (the buffer's second row stays zero).
      if (next > 1) {
        CUDA_CHECK(cudaMemset(d_rows.ptr, 0, (size_t)capacity * s.C * sizeof(float)));
        CUDA_CHECK(cudaMemset(d_row_of.ptr, 0, (size_t)(s.V + 1) * sizeof(int)));
        encoder_backward_rows(d_rows.ptr, d_row_of.ptr, 1, d_ws.ptr, ws_bytes, d_dout1.ptr, d_tok1.ptr, s.N, s.C, s.V, 0);
        encoder_backward_rows(d_rows.ptr, d_row_of.ptr, 1, d_ws.ptr, ws_bytes, d_dout2.ptr, d_tok2.ptr, s.N, s.C, s.V, 0);
        sync_and_check();
        const auto short_map = d_row_of.download();
        const auto short_rows = d_rows.download();
        EXPECT_EQ(short_map[s.V], next) << "rows needed" << where;
        int with_row = 0, dropped = 0;
        for (int v = 0; v < s.V; v++) with_row += short_map[v] > 0, dropped += short_map[v] == -1;
        EXPECT_EQ(with_row, 1) << where;
        EXPECT_EQ(dropped, next - 1) << "tokens marked as dropped" << where;
        if (capacity > 1)
          EXPECT_TRUE(std::all_of(short_rows.begin() + s.C, short_rows.begin() + 2 * s.C, [](float x) { return x == 0.0f; }))
              << "written past the rows" << where;
      }
    }
  }
}
