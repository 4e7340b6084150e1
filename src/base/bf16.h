// bf16 <-> float on the host, as raw 16-bit patterns (the checkpoint readers and writers, the
// trainer state of bf16 moments). The device side has its own in kernels/common.cuh.
#pragma once
#include <cstdint>
#include <cstring>

namespace owlore {

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Round to nearest even; NaN stays NaN (quiet); values beyond bf16's range round to inf.
inline uint16_t float_to_bf16(float x) {
  uint32_t f;
  std::memcpy(&f, &x, 4);
  if ((f & 0x7fffffff) > 0x7f800000) return (uint16_t)((f >> 16) | 0x40);
  f += 0x7fff + ((f >> 16) & 1);
  return (uint16_t)(f >> 16);
}

// The upper half of a float that holds a bf16 value exactly (no rounding).
inline uint16_t bf16_bits_of(float x) {
  uint32_t f;
  std::memcpy(&f, &x, 4);
  return (uint16_t)(f >> 16);
}

}  // namespace owlore
