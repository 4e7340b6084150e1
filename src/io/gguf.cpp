#include "io/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/error.h"

namespace owlore {

// ---- value types ------------------------------------------------------------------------------

const char* gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8: return "uint8";
    case GgufValueType::INT8: return "int8";
    case GgufValueType::UINT16: return "uint16";
    case GgufValueType::INT16: return "int16";
    case GgufValueType::UINT32: return "uint32";
    case GgufValueType::INT32: return "int32";
    case GgufValueType::FLOAT32: return "float32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::UINT64: return "uint64";
    case GgufValueType::INT64: return "int64";
    case GgufValueType::FLOAT64: return "float64";
  }
  return "?";
}

namespace {
bool is_integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::UINT16: case GgufValueType::INT16:
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::UINT64: case GgufValueType::INT64:
    case GgufValueType::BOOL:
      return true;
    default:
      return false;
  }
}
// Bytes of one scalar in the file; 0 for STRING/ARRAY (variable) and unknown types.
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}
}  // namespace

bool GgufValue::is_integer() const { return is_integer_type(type); }

uint64_t GgufValue::array_size() const {
  return strings.size() + ints.size() + floats.size() + arrays.size();
}

std::string GgufValue::type_name() const {
  if (type != GgufValueType::ARRAY) return gguf_value_type_name(type);
  if (elem_type == GgufValueType::ARRAY) {
    // Nested: name the inner element type when the array has one.
    return "array of " + (arrays.empty() ? std::string("array") : arrays[0].type_name());
  }
  return std::string("array of ") + gguf_value_type_name(elem_type);
}

// ---- ggml types -------------------------------------------------------------------------------

namespace {
struct GgmlTypeInfo {
  uint32_t id;
  const char* name;
  int64_t block, size;  // elements per block, bytes per block (ggml.c type_traits)
};
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50}, {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},  {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},       {28, "F64", 1, 8},       {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},  {35, "TQ2_0", 256, 66},
};
const GgmlTypeInfo* ggml_info(uint32_t id) {
  for (const GgmlTypeInfo& i : kGgmlTypes)
    if (i.id == id) return &i;
  return nullptr;
}
}  // namespace

bool ggml_type_known(uint32_t type) { return ggml_info(type) != nullptr; }
const char* ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* i = ggml_info((uint32_t)type);
  return i ? i->name : "?";
}
int64_t ggml_block_size(GgmlType type) {
  const GgmlTypeInfo* i = ggml_info((uint32_t)type);
  OWLORE_REQUIRE(i, "unknown ggml type ", (uint32_t)type);
  return i->block;
}
int64_t ggml_type_size(GgmlType type) {
  const GgmlTypeInfo* i = ggml_info((uint32_t)type);
  OWLORE_REQUIRE(i, "unknown ggml type ", (uint32_t)type);
  return i->size;
}
bool ggml_can_dequantize(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::F64 ||
         t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q4_1;
}

namespace {
template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* dst, const std::string& what) {
  OWLORE_REQUIRE(ggml_can_dequantize(type), what, ": cannot dequantize ggml type ", ggml_type_name(type), " (",
                 (uint32_t)type, "); supported: F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1");
  const int64_t block = ggml_block_size(type);
  OWLORE_REQUIRE(n % block == 0, what, ": ", n, " elements is not a multiple of the ", ggml_type_name(type),
                 " block size ", block);
  if (n == 0) return;  // an empty tensor's src/dst may be null, which memcpy must not see
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, (size_t)n * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; i++) dst[i] = f16_to_float(load<uint16_t>(src + 2 * i));
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(load<uint16_t>(src + 2 * i));
      return;
    case GgmlType::F64:
      for (int64_t i = 0; i < n; i++) dst[i] = (float)load<double>(src + 8 * i);
      return;
    case GgmlType::Q8_0:
      // block: fp16 d, int8 q[32]; x = d * q
      for (int64_t b = 0; b < n / 32; b++, src += 34, dst += 32) {
        const float d = f16_to_float(load<uint16_t>(src));
        for (int j = 0; j < 32; j++) dst[j] = d * (float)(int8_t)src[2 + j];
      }
      return;
    case GgmlType::Q4_0:
      // block: fp16 d, 16 bytes; low nibbles are elements 0..15, high nibbles 16..31; x = d * (q - 8)
      for (int64_t b = 0; b < n / 32; b++, src += 18, dst += 32) {
        const float d = f16_to_float(load<uint16_t>(src));
        for (int j = 0; j < 16; j++) {
          dst[j] = d * (float)((src[2 + j] & 0x0f) - 8);
          dst[j + 16] = d * (float)((src[2 + j] >> 4) - 8);
        }
      }
      return;
    case GgmlType::Q4_1:
      // block: fp16 d, fp16 m, 16 bytes of nibbles (as Q4_0); x = d * q + m
      for (int64_t b = 0; b < n / 32; b++, src += 20, dst += 32) {
        const float d = f16_to_float(load<uint16_t>(src));
        const float m = f16_to_float(load<uint16_t>(src + 2));
        for (int j = 0; j < 16; j++) {
          dst[j] = d * (float)(src[4 + j] & 0x0f) + m;
          dst[j + 16] = d * (float)(src[4 + j] >> 4) + m;
        }
      }
      return;
    default:
      break;
  }
  fail(what, ": internal: no dequantizer for ", ggml_type_name(type));
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // validated at parse time not to overflow
  return n;
}

// ---- parsing ----------------------------------------------------------------------------------

namespace {
// Bounds-checked little-endian cursor over the file; every read names the file and what it was
// reading when it runs out.
struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  const std::string& source;

  size_t left() const { return size - pos; }
  void need(size_t n, const std::string& what) const {
    OWLORE_REQUIRE(n <= left(), source, ": truncated: ", what, " needs ", n, " bytes at offset ", pos, " but only ",
                   left(), " remain");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v = load<T>(data + pos);
    pos += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    OWLORE_REQUIRE(len <= left(), source, ": ", what, " length ", len, " runs past the end of the file (", left(),
                   " bytes remain at offset ", pos, ")");
    std::string s(reinterpret_cast<const char*>(data + pos), (size_t)len);
    pos += (size_t)len;
    return s;
  }
};

constexpr int kMaxArrayDepth = 4;

void read_value(Reader& r, GgufValueType type, GgufValue& out, const std::string& what, int depth);

void read_array(Reader& r, GgufValue& out, const std::string& what, int depth) {
  OWLORE_REQUIRE(depth < kMaxArrayDepth, r.source, ": ", what, ": arrays nested deeper than ", kMaxArrayDepth);
  const uint32_t elem = r.read<uint32_t>(what + " element type");
  OWLORE_REQUIRE(elem <= (uint32_t)GgufValueType::FLOAT64, r.source, ": ", what, ": unknown array element type ", elem);
  out.elem_type = (GgufValueType)elem;
  const uint64_t count = r.read<uint64_t>(what + " array length");
  // Every element takes at least this many bytes in the file: caps the count by the file size
  // before anything is allocated.
  const size_t min_bytes = out.elem_type == GgufValueType::STRING  ? 8
                           : out.elem_type == GgufValueType::ARRAY ? 12
                                                                   : scalar_size(out.elem_type);
  OWLORE_REQUIRE(count <= r.left() / min_bytes, r.source, ": ", what, ": array of ", count, " ",
                 gguf_value_type_name(out.elem_type), " runs past the end of the file (", r.left(),
                 " bytes remain)");
  switch (out.elem_type) {
    case GgufValueType::STRING:
      out.strings.reserve((size_t)count);
      for (uint64_t i = 0; i < count; i++) out.strings.push_back(r.read_string(what + "[" + std::to_string(i) + "]"));
      return;
    case GgufValueType::ARRAY:
      out.arrays.resize((size_t)count);
      for (uint64_t i = 0; i < count; i++) {
        out.arrays[i].type = GgufValueType::ARRAY;
        read_array(r, out.arrays[i], what + "[" + std::to_string(i) + "]", depth + 1);
      }
      return;
    case GgufValueType::FLOAT32:
      out.floats.resize((size_t)count);
      for (uint64_t i = 0; i < count; i++) out.floats[i] = load<float>(r.data + r.pos + 4 * i);
      r.pos += (size_t)count * 4;
      return;
    case GgufValueType::FLOAT64:
      out.floats.resize((size_t)count);
      for (uint64_t i = 0; i < count; i++) out.floats[i] = load<double>(r.data + r.pos + 8 * i);
      r.pos += (size_t)count * 8;
      return;
    default: {
      out.ints.resize((size_t)count);
      GgufValue scalar;
      for (uint64_t i = 0; i < count; i++) {
        read_value(r, out.elem_type, scalar, what, depth + 1);
        out.ints[i] = scalar.int_value;
      }
      return;
    }
  }
}

void read_value(Reader& r, GgufValueType type, GgufValue& out, const std::string& what, int depth) {
  out.type = type;
  switch (type) {
    case GgufValueType::UINT8: out.int_value = r.read<uint8_t>(what); return;
    case GgufValueType::INT8: out.int_value = r.read<int8_t>(what); return;
    case GgufValueType::UINT16: out.int_value = r.read<uint16_t>(what); return;
    case GgufValueType::INT16: out.int_value = r.read<int16_t>(what); return;
    case GgufValueType::UINT32: out.int_value = r.read<uint32_t>(what); return;
    case GgufValueType::INT32: out.int_value = r.read<int32_t>(what); return;
    case GgufValueType::UINT64: out.int_value = (int64_t)r.read<uint64_t>(what); return;
    case GgufValueType::INT64: out.int_value = r.read<int64_t>(what); return;
    case GgufValueType::FLOAT32: out.float_value = r.read<float>(what); return;
    case GgufValueType::FLOAT64: out.float_value = r.read<double>(what); return;
    case GgufValueType::BOOL: {
      const uint8_t b = r.read<uint8_t>(what);
      OWLORE_REQUIRE(b <= 1, r.source, ": ", what, ": bool value ", (int)b, " (expected 0 or 1)");
      out.int_value = b;
      return;
    }
    case GgufValueType::STRING: out.string_value = r.read_string(what); return;
    case GgufValueType::ARRAY: read_array(r, out, what, depth); return;
  }
  fail(r.source, ": ", what, ": unknown value type ", (uint32_t)type);
}
}  // namespace

GgufFile::GgufFile(const std::string& path) : file_(path, "GGUF file"), source_(path) {
  parse(file_.data(), file_.size());
}

GgufFile::GgufFile(const uint8_t* data, size_t size, const std::string& source) : source_(source) {
  parse(data, size);
}

void GgufFile::parse(const uint8_t* data, size_t size) {
  Reader r{data, size, 0, source_};
  OWLORE_REQUIRE(size >= 4 && std::memcmp(data, "GGUF", 4) == 0, source_, ": not a GGUF file (no 'GGUF' magic)");
  r.pos = 4;
  version_ = r.read<uint32_t>("version");
  OWLORE_REQUIRE(version_ != 1, source_, ": GGUF version 1 is not supported (expected 2 or 3)");
  OWLORE_REQUIRE(version_ == 2 || version_ == 3, source_, ": GGUF version ", version_,
                 " (expected 2 or 3; a big-endian file reads as a huge version)");
  const uint64_t tensor_count = r.read<uint64_t>("tensor count");
  const uint64_t kv_count = r.read<uint64_t>("metadata count");
  // Smallest possible entries: key (8-byte length) + type + 1-byte value; tensor info with an
  // empty name and one dimension.
  OWLORE_REQUIRE(kv_count <= r.left() / 13, source_, ": metadata count ", kv_count, " cannot fit in the ", size,
                 "-byte file");
  OWLORE_REQUIRE(tensor_count <= r.left() / 32, source_, ": tensor count ", tensor_count, " cannot fit in the ", size,
                 "-byte file");

  for (uint64_t i = 0; i < kv_count; i++) {
    const std::string key = r.read_string("metadata key #" + std::to_string(i));
    const std::string what = "metadata key '" + key + "'";
    OWLORE_REQUIRE(!metadata_.count(key), source_, ": ", what, " appears twice");
    const uint32_t type = r.read<uint32_t>(what + " type");
    OWLORE_REQUIRE(type <= (uint32_t)GgufValueType::FLOAT64, source_, ": ", what, ": unknown value type ", type);
    GgufValue value;
    read_value(r, (GgufValueType)type, value, what, 0);
    metadata_.emplace(key, std::move(value));
    key_order_.push_back(key);
  }

  if (const GgufValue* a = find("general.alignment")) {
    OWLORE_REQUIRE(a->type == GgufValueType::UINT32, source_, ": metadata key 'general.alignment' is ",
                   a->type_name(), ", expected uint32");
    const uint64_t al = (uint64_t)a->int_value;
    OWLORE_REQUIRE(al > 0 && (al & (al - 1)) == 0, source_, ": general.alignment ", al,
                   " is not a power of two");
    alignment_ = al;
  }

  for (uint64_t i = 0; i < tensor_count; i++) {
    GgufTensor t;
    t.name = r.read_string("tensor info #" + std::to_string(i) + " name");
    const std::string what = source_ + ": tensor '" + t.name + "'";
    OWLORE_REQUIRE(!tensor_index_.count(t.name), what, " appears twice");
    const uint32_t n_dims = r.read<uint32_t>("tensor '" + t.name + "' dimension count");
    OWLORE_REQUIRE(n_dims >= 1 && n_dims <= 4, what, ": ", n_dims, " dimensions (expected 1 to 4)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      const uint64_t ne = r.read<uint64_t>("tensor '" + t.name + "' dimensions");
      OWLORE_REQUIRE(ne <= (uint64_t)INT64_MAX && !__builtin_mul_overflow(numel, ne, &numel) &&
                         numel <= (uint64_t)INT64_MAX,
                     what, ": dimensions overflow 64 bits");
      t.ne.push_back((int64_t)ne);
    }
    const uint32_t type = r.read<uint32_t>("tensor '" + t.name + "' type");
    OWLORE_REQUIRE(ggml_type_known(type), what, ": unknown ggml type ", type);
    t.type = (GgmlType)type;
    t.offset = r.read<uint64_t>("tensor '" + t.name + "' offset");
    const int64_t block = ggml_block_size(t.type);
    OWLORE_REQUIRE(t.ne[0] % block == 0, what, ": row length ne[0] = ", t.ne[0], " is not a multiple of the ",
                   ggml_type_name(t.type), " block size ", block);
    OWLORE_REQUIRE(!__builtin_mul_overflow(numel / (uint64_t)block, (uint64_t)ggml_type_size(t.type), &t.nbytes), what,
                   ": byte size overflows 64 bits");
    OWLORE_REQUIRE(t.offset % alignment_ == 0, what, ": offset ", t.offset, " is not a multiple of the alignment ",
                   alignment_);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t data_start = (r.pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  OWLORE_REQUIRE(tensors_.empty() || data_start <= size, source_, ": data section (offset ", data_start,
                 ") starts past the end of the file (", size, " bytes)");
  for (GgufTensor& t : tensors_) {
    OWLORE_REQUIRE(t.offset <= data_size && t.nbytes <= data_size - t.offset, source_, ": tensor '", t.name,
                   "': bytes [", t.offset, ", +", t.nbytes, ") of ", ggml_type_name(t.type),
                   " run past the end of the data section (", data_size, " bytes)");
    t.data = data + data_start + t.offset;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const GgufTensor* a, const GgufTensor* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < by_offset.size(); i++) {
    const GgufTensor &prev = *by_offset[i - 1], &cur = *by_offset[i];
    OWLORE_REQUIRE(cur.offset >= prev.offset + prev.nbytes, source_, ": tensor '", cur.name, "' bytes [", cur.offset,
                   ", ", cur.offset + cur.nbytes, ") overlap tensor '", prev.name, "' bytes [", prev.offset, ", ",
                   prev.offset + prev.nbytes, ")");
  }
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

void GgufFile::dequantize(const GgufTensor& t, float* out) const {
  owlore::dequantize(t.type, t.data, t.numel(), out, source_ + ": tensor '" + t.name + "'");
}

std::vector<float> GgufFile::dequantize(const GgufTensor& t) const {
  OWLORE_REQUIRE(ggml_can_dequantize(t.type), source_, ": tensor '", t.name, "': cannot dequantize ggml type ",
                 ggml_type_name(t.type), "; supported: F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1");
  std::vector<float> out((size_t)t.numel());
  dequantize(t, out.data());
  return out;
}

// ---- metadata access --------------------------------------------------------------------------

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found");
  return *v;
}

namespace {
[[noreturn]] void wrong_type(const std::string& source, const std::string& key, const GgufValue& v,
                             const char* expected) {
  fail(source, ": metadata key '", key, "' is ", v.type_name(), ", expected ", expected);
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected a string)");
  if (v->type != GgufValueType::STRING) wrong_type(source_, key, *v, "a string");
  return v->string_value;
}
std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected an integer)");
  if (!v->is_integer()) wrong_type(source_, key, *v, "an integer");
  return v->int_value;
}
int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected a float)");
  if (v->is_float()) return v->float_value;
  if (v->is_integer() && v->type != GgufValueType::BOOL) return (double)v->int_value;
  wrong_type(source_, key, *v, "a float");
}
double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected a bool)");
  if (v->type != GgufValueType::BOOL) wrong_type(source_, key, *v, "a bool");
  return v->int_value != 0;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected an array of string)");
  if (v->type != GgufValueType::ARRAY || v->elem_type != GgufValueType::STRING)
    wrong_type(source_, key, *v, "an array of string");
  return v->strings;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected an array of integers)");
  if (v->type != GgufValueType::ARRAY || !is_integer_type(v->elem_type))
    wrong_type(source_, key, *v, "an array of integers");
  return v->ints;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(source_, ": metadata key '", key, "' not found (expected an array of floats)");
  if (v->type != GgufValueType::ARRAY ||
      (v->elem_type != GgufValueType::FLOAT32 && v->elem_type != GgufValueType::FLOAT64))
    wrong_type(source_, key, *v, "an array of floats");
  return v->floats;
}

std::vector<std::string> GgufFile::tokens() const {
  return has("tokenizer.ggml.tokens") ? get_string_array("tokenizer.ggml.tokens") : std::vector<std::string>{};
}
std::vector<std::string> GgufFile::merges() const {
  return has("tokenizer.ggml.merges") ? get_string_array("tokenizer.ggml.merges") : std::vector<std::string>{};
}
std::vector<int64_t> GgufFile::token_types() const {
  return has("tokenizer.ggml.token_type") ? get_int_array("tokenizer.ggml.token_type") : std::vector<int64_t>{};
}
int64_t GgufFile::bos_id() const { return get_int("tokenizer.ggml.bos_token_id", -1); }
int64_t GgufFile::eos_id() const { return get_int("tokenizer.ggml.eos_token_id", -1); }
int64_t GgufFile::padding_id() const { return get_int("tokenizer.ggml.padding_token_id", -1); }
std::string GgufFile::tokenizer_model() const { return get_string("tokenizer.ggml.model", ""); }
std::string GgufFile::tokenizer_pre() const { return get_string("tokenizer.ggml.pre", ""); }

// ---- model config -----------------------------------------------------------------------------

ModelConfig GgufFile::config() const {
  const std::string arch = get_string("general.architecture");
  OWLORE_REQUIRE(arch == "llama", source_, ": general.architecture is '", arch, "', expected 'llama'");
  auto dim = [&](const std::string& key, int64_t value) {
    OWLORE_REQUIRE(value > 0 && value <= std::numeric_limits<int>::max(), source_, ": metadata key '", key, "' = ",
                   value, " (expected a positive 32-bit integer)");
    return (int)value;
  };
  if (has("llama.rope.scaling.type")) {
    const std::string scaling = get_string("llama.rope.scaling.type");
    OWLORE_REQUIRE(scaling == "none", source_, ": llama.rope.scaling.type '", scaling,
                   "' is not supported (expected none)");
  }
  ModelConfig c;
  c.name = get_string("general.name", "");
  if (c.name.empty()) c.name = source_.substr(source_.find_last_of('/') + 1);
  c.n_layers = dim("llama.block_count", get_int("llama.block_count"));
  c.d_model = dim("llama.embedding_length", get_int("llama.embedding_length"));
  c.ffn = dim("llama.feed_forward_length", get_int("llama.feed_forward_length"));
  c.n_heads = dim("llama.attention.head_count", get_int("llama.attention.head_count"));
  c.n_kv_heads = dim("llama.attention.head_count_kv", get_int("llama.attention.head_count_kv", c.n_heads));
  c.head_dim = dim("llama.attention.key_length", get_int("llama.attention.key_length", c.d_model / c.n_heads));
  if (has("llama.attention.value_length")) {
    const int64_t v = get_int("llama.attention.value_length");
    OWLORE_REQUIRE(v == c.head_dim, source_, ": llama.attention.value_length = ", v,
                   " differs from key_length ", c.head_dim, " (not supported)");
  }
  if (has("llama.rope.dimension_count")) {
    const int64_t rot = get_int("llama.rope.dimension_count");
    OWLORE_REQUIRE(rot == c.head_dim, source_, ": llama.rope.dimension_count = ", rot,
                   " (partial rotary embedding is not supported; expected head_dim ", c.head_dim, ")");
  }
  c.max_seq = (int)std::clamp<int64_t>(get_int("llama.context_length", 0), 0, std::numeric_limits<int>::max());
  // A RoPE base and an RMSNorm epsilon mean something only finite and > 0, as the floats the
  // runtime computes with (1e39 overflows to inf, 1e-50 underflows to 0).
  auto positive = [&](const std::string& key, double fallback) {
    const double value = get_float(key, fallback);
    const float f = (float)value;
    OWLORE_REQUIRE(std::isfinite(f) && f > 0, source_, ": metadata key '", key, "' = ", value,
                   " (expected a finite 32-bit float > 0)");
    return f;
  };
  c.rope_theta = positive("llama.rope.freq_base", 10000.0);
  c.norm_eps = positive("llama.attention.layer_norm_rms_epsilon", 1e-5);
  if (has("llama.vocab_size")) {
    c.vocab = dim("llama.vocab_size", get_int("llama.vocab_size"));
  } else if (has("tokenizer.ggml.tokens")) {
    c.vocab = dim("tokenizer.ggml.tokens (count)", (int64_t)get("tokenizer.ggml.tokens").array_size());
  } else if (const GgufTensor* e = find_tensor("token_embd.weight"); e && e->ne.size() == 2) {
    c.vocab = dim("token_embd.weight ne[1]", e->ne[1]);
  } else {
    fail(source_, ": cannot tell the vocabulary size: no llama.vocab_size, tokenizer.ggml.tokens or token_embd.weight");
  }
  c.tied_embeddings = find_tensor("output.weight") == nullptr;
  const int64_t bos = bos_id(), eos = eos_id();
  c.bos_token = bos >= 0 && bos < c.vocab ? (int)bos : -1;
  c.eos_token = eos >= 0 && eos < c.vocab ? (int)eos : -1;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(source_, ": ", e.what());
  }
  return c;
}

// ---- names and the RoPE permutation -----------------------------------------------------------

std::string gguf_name_for_hf(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const char* const kPrefix = "model.layers.";
  if (hf.rfind(kPrefix, 0) != 0) return "";
  const size_t start = std::strlen(kPrefix);
  const size_t dot = hf.find('.', start);
  if (dot == std::string::npos || dot == start) return "";
  const std::string layer = hf.substr(start, dot - start);
  if (layer.find_first_not_of("0123456789") != std::string::npos) return "";
  static const std::pair<const char*, const char*> kLayerNames[] = {
      {"input_layernorm.weight", "attn_norm.weight"},   {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},     {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  const std::string rest = hf.substr(dot + 1);
  for (const auto& [from, to] : kLayerNames)
    if (rest == from) return "blk." + layer + "." + to;
  return "";
}

namespace {
// Row r = h*hd + s*(hd/2) + i in rotate-half (Hugging Face) order sits at h*hd + 2*i + s in
// interleaved (GGUF) order. to_interleaved picks the direction.
void reorder_rows(float* w, int64_t rows, int64_t cols, int n_heads, bool to_interleaved) {
  OWLORE_REQUIRE(n_heads > 0 && rows % n_heads == 0 && (rows / n_heads) % 2 == 0, "RoPE row permutation: ", rows,
                 " rows do not split into ", n_heads, " heads of even size");
  if (rows == 0 || cols == 0) return;  // nothing to move (and memcpy must not see null pointers)
  const int64_t hd = rows / n_heads, half = hd / 2;
  std::vector<float> head((size_t)(hd * cols));
  for (int h = 0; h < n_heads; h++) {
    float* base = w + (int64_t)h * hd * cols;
    std::memcpy(head.data(), base, head.size() * sizeof(float));
    for (int64_t s = 0; s < 2; s++)
      for (int64_t i = 0; i < half; i++) {
        const int64_t hf_row = s * half + i, gguf_row = 2 * i + s;
        const int64_t dst = to_interleaved ? gguf_row : hf_row, src = to_interleaved ? hf_row : gguf_row;
        std::memcpy(base + dst * cols, head.data() + src * cols, (size_t)cols * sizeof(float));
      }
  }
}
}  // namespace

void permute_rows_for_interleaved_rope(float* w, int64_t rows, int64_t cols, int n_heads) {
  reorder_rows(w, rows, cols, n_heads, true);
}
void unpermute_rows_from_interleaved_rope(float* w, int64_t rows, int64_t cols, int n_heads) {
  reorder_rows(w, rows, cols, n_heads, false);
}

}  // namespace owlore
