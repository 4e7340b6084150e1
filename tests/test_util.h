// Shared test helpers: seeded random data (never zeros), relative error, NaN poisoning,
// finite differences, and the GPU presence check that makes GPU tests skip visibly in CI.
#pragma once
#include <stdlib.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/rng.h"

namespace owlore::test {

// A fresh directory under /tmp, removed with everything in it when the test ends.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag = "test") {
    std::string templ = "/tmp/owlore_" + tag + "_XXXXXX";
    path = mkdtemp(templ.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Runs f and expects an owlore::Error whose message contains every one of parts.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL() << "expected owlore::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(message.find(p), std::string::npos) << "message lacks '" << p << "': " << message;
  }
}

inline std::vector<float> random_vector(int64_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (auto& v : x) v = (float)rng.normal() * scale;
  return x;
}

inline std::vector<int> random_tokens(int64_t n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> t(n);
  for (auto& v : t) v = (int)rng.below(vocab);
  return t;
}

inline void poison(std::vector<float>& x) { x.assign(x.size(), std::numeric_limits<float>::quiet_NaN()); }

// ||out - ref|| / ||ref|| in double; NaN anywhere gives NaN (which fails every <= bound).
inline double rel_error(const float* out, const float* ref, int64_t n) {
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < n; i++) {
    diff += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]);
    norm += (double)ref[i] * ref[i];
  }
  if (norm == 0.0) return std::sqrt(diff);
  return std::sqrt(diff / norm);
}
inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  return rel_error(out.data(), ref.data(), (int64_t)ref.size());
}

}  // namespace owlore::test
