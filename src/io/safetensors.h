// safetensors read (mmap) and write, plus the pieces every checkpoint format shares: a read-only
// file mapping, an atomically replaced output file, and fp16/bf16 <-> float conversion.
//
// Format (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes
// of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the byte buffer; offsets are relative to the buffer's start. Everything is validated when
// the file is opened (N frames the JSON object exactly, up to trailing whitespace; bounds;
// shape x dtype == byte length; the tensors tile the buffer with no overlap, hole or tail), so a
// bad file fails with one owlore::Error naming the file and tensor before anything reads its bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "base/atomic_file.h"
#include "base/bf16.h"

namespace owlore {

// ---- half-precision conversion ----------------------------------------------------------------

float f16_to_float(uint16_t h);
uint16_t float_to_f16(float x);  // round to nearest even; overflow -> inf; NaN stays NaN

// ---- resources --------------------------------------------------------------------------------

// A whole regular file (io/files.h) mapped read-only. Owns the mapping and unmaps it in its
// destructor; move-only.
class MappedFile {
 public:
  MappedFile() = default;
  // Throws owlore::Error naming the path and `what` ("safetensors file").
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// ---- reading ----------------------------------------------------------------------------------

enum class StDtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

// Bytes per element; the dtype's name as safetensors spells it ("BF16").
size_t st_dtype_size(StDtype dtype);
const char* st_dtype_name(StDtype dtype);
// Throws owlore::Error naming `what` (file and tensor) for a dtype string safetensors does not define.
StDtype parse_st_dtype(const std::string& name, const std::string& what);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;   // row-major, outermost first
  uint64_t begin = 0, end = 0;  // byte range relative to the data buffer
  const uint8_t* data = nullptr;  // begin of the bytes (inside the mapping; may be unaligned)
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// An opened safetensors file: the mapping plus the validated tensor table.
class SafetensorsFile {
 public:
  // Maps and validates `path`.
  explicit SafetensorsFile(const std::string& path);
  // Validates a buffer that the caller keeps alive (tests, fuzzing); `source` names it in errors.
  SafetensorsFile(const uint8_t* data, size_t size, const std::string& source);

  const std::string& source() const { return source_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }  // in file (byte) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const StTensor* find(const std::string& name) const;
  // The tensor `name`, or an owlore::Error naming the file and the tensor.
  const StTensor& get(const std::string& name) const;
  // Converts F32/F16/BF16/F64 to float into out[0 .. numel); other dtypes throw, naming the tensor.
  void read_float(const StTensor& tensor, float* out) const;
  std::vector<float> read_float(const StTensor& tensor) const;

 private:
  void parse(const uint8_t* data, size_t size);
  MappedFile file_;
  std::string source_;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// ---- writing ----------------------------------------------------------------------------------

struct StWriteTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // numel(shape) floats
};

// Writes all tensors converted to `dtype` (F32, F16 or BF16) into out, with the given metadata
// (Hugging Face expects {"format": "pt"}). Data follows the order of `tensors`; the header is
// padded with spaces to a multiple of 8 bytes so every tensor's bytes start aligned.
void write_safetensors(AtomicFile& out, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata);
// Convenience: one file, written atomically.
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace owlore
