// GPU test helpers: skip visibly where no GPU is present (CI), bf16 conversion helpers, and
// an RAII device buffer poisoned with NaN before each call so unwritten outputs fail.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace owlore::test {

inline bool gpu_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define OWLORE_SKIP_WITHOUT_GPU()                                              \
  do {                                                                         \
    if (!::owlore::test::gpu_available())                                      \
      GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped";     \
  } while (0)

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    if (cudaMalloc(&ptr, count * sizeof(T) + 16) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
    poison();
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // 0xFF bytes are NaN in both float and bf16.
  void poison() { cudaMemset(ptr, 0xFF, n * sizeof(T)); }
  void upload(const std::vector<T>& host) { cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> host(n);
    cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }
};

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> out(x.size());
  for (size_t i = 0; i < x.size(); i++) out[i] = __float2bfloat16(x[i]);
  return out;
}
inline std::vector<float> to_float(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); i++) out[i] = __bfloat162float(x[i]);
  return out;
}
// Round-trip through bf16: the exact inputs the GPU sees, so the fp32 twin computes on them.
inline std::vector<float> round_bf16(const std::vector<float>& x) { return to_float(to_bf16(x)); }

}  // namespace owlore::test
