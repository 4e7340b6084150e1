// A small GGUF writer for tests: metadata of any type and tensors, laid out as the GGUF reader
// expects (tests/test_gguf.cpp checks the reader against it).
#pragma once
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace owlore::test {

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

struct GgufWriter {
  uint32_t version = 3;
  uint64_t alignment = 32;  // where the writer places data; add general.alignment to change the reader's
  std::string kvs;
  uint64_t n_kv = 0;
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    std::string bytes;
  };
  std::vector<Tensor> tensors;

  void key(const std::string& k, GgufValueType t) {
    put_str(kvs, k);
    put<uint32_t>(kvs, (uint32_t)t);
    n_kv++;
  }
  template <typename T>
  void scalar(const std::string& k, GgufValueType t, T v) {
    key(k, t);
    put<T>(kvs, v);
  }
  void u32(const std::string& k, uint32_t v) { scalar(k, GgufValueType::UINT32, v); }
  void f32(const std::string& k, float v) { scalar(k, GgufValueType::FLOAT32, v); }
  void string(const std::string& k, const std::string& v) {
    key(k, GgufValueType::STRING);
    put_str(kvs, v);
  }
  void strings(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufValueType::ARRAY);
    put<uint32_t>(kvs, (uint32_t)GgufValueType::STRING);
    put<uint64_t>(kvs, v.size());
    for (const std::string& s : v) put_str(kvs, s);
  }
  void i32s(const std::string& k, const std::vector<int32_t>& v) {
    key(k, GgufValueType::ARRAY);
    put<uint32_t>(kvs, (uint32_t)GgufValueType::INT32);
    put<uint64_t>(kvs, v.size());
    for (int32_t x : v) put<int32_t>(kvs, x);
  }
  void tensor(const std::string& name, GgmlType type, std::vector<uint64_t> ne, std::string bytes) {
    tensors.push_back({name, (uint32_t)type, std::move(ne), std::move(bytes)});
  }
  void tensor_f32(const std::string& name, std::vector<uint64_t> ne, const float* data) {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    tensor(name, GgmlType::F32, std::move(ne), std::string(reinterpret_cast<const char*>(data), n * 4));
  }
  std::string build() const {
    std::string out = "GGUF";
    put<uint32_t>(out, version);
    put<uint64_t>(out, tensors.size());
    put<uint64_t>(out, n_kv);
    out += kvs;
    std::string data;
    for (const Tensor& t : tensors) {
      data.append((alignment - data.size() % alignment) % alignment, '\0');
      put_str(out, t.name);
      put<uint32_t>(out, (uint32_t)t.ne.size());
      for (uint64_t d : t.ne) put<uint64_t>(out, d);
      put<uint32_t>(out, t.type);
      put<uint64_t>(out, data.size());
      data += t.bytes;
    }
    out.append((alignment - out.size() % alignment) % alignment, '\0');
    return out + data;
  }
  void save(const std::string& path) const {
    const std::string bytes = build();
    std::ofstream(path, std::ios::binary).write(bytes.data(), (std::streamsize)bytes.size());
  }
};

}  // namespace owlore::test
