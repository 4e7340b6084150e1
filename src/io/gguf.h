// GGUF v2/v3 reader (mmap): metadata of every value type, tensor infos, dequantization of
// F32/F16/BF16/Q8_0/Q4_0/Q4_1 to float, the llama-architecture keys -> ModelConfig, GGUF tensor
// names -> Hugging Face names, and the tokenizer metadata.
//
// Format (ggml/docs/gguf.md): "GGUF", u32 version, u64 tensor_count, u64 kv_count, then kv_count
// (string key, u32 value type, value), then tensor_count (string name, u32 n_dims, u64 ne[n_dims],
// u32 ggml type, u64 offset), then padding to general.alignment (default 32), then the data.
// Strings are u64 length + bytes. ne[0] is the innermost (row) length, so a GGUF tensor with
// ne = [C, V] is the row-major (V, C) matrix of Hugging Face.
// Everything is validated when the file is opened; every count is capped by the bytes left in the
// file, so a hostile header cannot make the reader allocate more than a small multiple of the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"  // MappedFile
#include "model/config.h"

namespace owlore {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(GgufValueType type);

// One metadata value. Scalars fill one of the scalar fields; an array fills elem_type and exactly
// one of strings / ints / floats / arrays (integers and bools as int64, uint64 bit-cast).
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  int64_t int_value = 0;       // every integer type and BOOL
  double float_value = 0.0;    // FLOAT32, FLOAT64
  std::string string_value;    // STRING
  GgufValueType elem_type = GgufValueType::UINT8;  // ARRAY
  std::vector<std::string> strings;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<GgufValue> arrays;  // arrays of arrays
  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::FLOAT32 || type == GgufValueType::FLOAT64; }
  uint64_t array_size() const;
  std::string type_name() const;  // "array of string", "uint32", ...
};

// ggml tensor types (ggml.h enum ggml_type); the ones this reader dequantizes are F32, F16, BF16,
// Q8_0, Q4_0, Q4_1. Sizes of the others are known so files that contain them still open (and
// `owlore info` can list them); dequantizing one throws, naming the type and tensor.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35,
};
// Name ("Q4_1"), elements per block and bytes per block; false/"?" for an id ggml does not define.
bool ggml_type_known(uint32_t type);
const char* ggml_type_name(GgmlType type);
int64_t ggml_block_size(GgmlType type);
int64_t ggml_type_size(GgmlType type);
bool ggml_can_dequantize(GgmlType type);
// Dequantizes n elements (n a multiple of the block size) of `type` at src (may be unaligned).
// `what` names the tensor in errors.
void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* dst, const std::string& what);

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ne[0] = row length (innermost), up to 4 dims
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;
  int64_t numel() const;
  // Row-major shape as Hugging Face writes it: ne reversed.
  std::vector<int64_t> hf_shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // maps and validates
  // Validates a buffer the caller keeps alive (tests, fuzzing); `source` names it in errors.
  GgufFile(const uint8_t* data, size_t size, const std::string& source);

  const std::string& source() const { return source_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const std::vector<std::string>& keys() const { return key_order_; }  // metadata keys in file order
  const GgufTensor* find_tensor(const std::string& name) const;
  std::vector<float> dequantize(const GgufTensor& tensor) const;
  void dequantize(const GgufTensor& tensor, float* out) const;

  // Generic metadata access. The get_* forms throw owlore::Error naming the file, the key and the
  // type expected when the key is absent or has another type; the forms with a fallback return
  // it when the key is absent (a present key of the wrong type still throws).
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& get(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  int64_t get_int(const std::string& key) const;  // any integer type (or bool)
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;  // float32/64 or any integer type
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;

  // Tokenizer metadata (tokenizer.ggml.*) for the BPE tokenizer. Arrays are empty and ids -1 when
  // the file has none.
  std::vector<std::string> tokens() const;
  std::vector<std::string> merges() const;
  std::vector<int64_t> token_types() const;
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t padding_id() const;
  std::string tokenizer_model() const;  // tokenizer.ggml.model, e.g. "gpt2"
  std::string tokenizer_pre() const;    // tokenizer.ggml.pre, e.g. "smollm"

  // general.architecture must be "llama"; throws naming the missing key otherwise.
  ModelConfig config() const;

 private:
  void parse(const uint8_t* data, size_t size);
  MappedFile file_;
  std::string source_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> key_order_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// GGUF tensor name for a Hugging Face one of the LLaMA layout ("model.layers.3.mlp.up_proj.weight"
// -> "blk.3.ffn_up.weight"); empty if there is no counterpart.
std::string gguf_name_for_hf(const std::string& hf_name);

// llama.cpp's converter (convert_hf_to_gguf.py `permute`) reorders the rows of wq and wk for
// interleaved RoPE: w.reshape(n_heads, 2, head_dim/2, cols).swapaxes(1, 2). These apply it and
// undo it in place on a (rows, cols) row-major matrix with rows = n_heads * head_dim
// (n_heads = n_kv_heads for wk).
void permute_rows_for_interleaved_rope(float* w /*(rows, cols)*/, int64_t rows, int64_t cols, int n_heads);
void unpermute_rows_from_interleaved_rope(float* w /*(rows, cols)*/, int64_t rows, int64_t cols, int n_heads);

}  // namespace owlore
