// Helpers for the GPU kernel tests (tests/test_*_gpu.cu): device upload/download of bf16 data,
// the PyTorch-bf16 baseline bound, small-shape mode for compute-sanitizer runs.
// Tolerance rule (DESIGN.md §4): a bf16 output's ||out-ref||/||ref|| must be within 2x (forward)
// or 3x (backward) of the error the same computation has in PyTorch bf16, emulated on the CPU
// (bf16 inputs, fp32 math, bf16 outputs, plus PyTorch's intermediate roundings where it has
// them), with a floor of 1e-3 for ops whose baseline is ~0.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "test_util.h"

namespace owlore::test {

// OWLORE_SMALL_SHAPES=1: only the odd, small shapes (compute-sanitizer runs).
inline bool small_shapes_only() {
  const char* s = std::getenv("OWLORE_SMALL_SHAPES");
  return s && s[0] == '1';
}

inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

inline void upload_bf16(DeviceBuffer<__nv_bfloat16>& d, const std::vector<float>& host) { d.upload(to_bf16(host)); }
inline std::vector<float> download_float(const DeviceBuffer<__nv_bfloat16>& d) { return to_float(d.download()); }

// The bound for a bf16 result: factor x baseline, floored.
inline double bf16_bound(double baseline, double factor, double floor = 1e-3) {
  return std::max(factor * baseline, floor);
}

// Baseline when PyTorch rounds only the final output: ||round(ref) - ref|| / ||ref||.
inline double rounding_baseline(const std::vector<float>& ref) { return rel_error(round_bf16(ref), ref); }

// Spacing of bf16 numbers at |x| (the gap to the next one up in magnitude).
inline float bf16_ulp(float x) {
  x = std::fabs(x);
  if (x < 1e-30f) return 1e-30f;
  int e;
  std::frexp(x, &e);  // x = f * 2^e, f in [0.5, 1)
  return std::ldexp(1.0f, e - 8);
}

inline ::testing::AssertionResult within(const char* what, double err, double bound) {
  if (err <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << err << " > bound " << bound;
}
#define EXPECT_REL_WITHIN(what, err, bound) EXPECT_TRUE(::owlore::test::within((what), (err), (bound)))

inline void sync_and_check() {
  const cudaError_t e = cudaDeviceSynchronize();
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
}

}  // namespace owlore::test
