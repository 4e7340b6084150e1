#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/files.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors and GGUF readers assume a little-endian host");

namespace owlore {

// ---- half-precision conversion ----------------------------------------------------------------

float f16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalize into a float.
    int e = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      e--;
    }
    bits = sign | ((uint32_t)e << 23) | ((mant & 0x3ff) << 13);
  }
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

uint16_t float_to_f16(float x) {
  uint32_t f;
  std::memcpy(&f, &x, 4);
  const uint32_t sign = (f >> 16) & 0x8000;
  const uint32_t exp = (f >> 23) & 0xff;
  uint32_t mant = f & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
  const int32_t e = (int32_t)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    // Result is subnormal (or zero): value = M * 2^(e-38) with the implicit bit in M, and a
    // subnormal half counts units of 2^-24, so shift right by 14 - e and round to nearest even.
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000;
    const int shift = 14 - e;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;  // a carry into the exponent is right (max -> inf)
  return (uint16_t)(sign | half);
}

// ---- MappedFile -------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path, const std::string& what) : path_(path) {
  const RegularFile file(path, what);
  size_ = (size_t)file.size();
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd(), 0);
    if (p == MAP_FAILED) fail(path, ": cannot mmap ", size_, " bytes of ", what, ": ", std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
  }
  // The mapping keeps the file alive after RegularFile closes the descriptor.
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

// ---- dtypes -----------------------------------------------------------------------------------

namespace {
struct DtypeInfo {
  StDtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {StDtype::BOOL, "BOOL", 1}, {StDtype::U8, "U8", 1},      {StDtype::I8, "I8", 1},
    {StDtype::F8_E5M2, "F8_E5M2", 1}, {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::I16, "I16", 2},
    {StDtype::U16, "U16", 2},   {StDtype::F16, "F16", 2},    {StDtype::BF16, "BF16", 2},
    {StDtype::I32, "I32", 4},   {StDtype::U32, "U32", 4},    {StDtype::F32, "F32", 4},
    {StDtype::I64, "I64", 8},   {StDtype::U64, "U64", 8},    {StDtype::F64, "F64", 8},
};
const DtypeInfo& info(StDtype d) {
  for (const DtypeInfo& i : kDtypes)
    if (i.dtype == d) return i;
  fail("internal: unknown safetensors dtype ", (int)d);
}

// A scan of JSON text that skips strings: the deepest bracket nesting (bounds the work the
// parser and the destructor do on hostile input) and where the first bracket opened closes
// again (npos when it does not within the text).
struct JsonExtent {
  int deepest = 0;
  size_t end = std::string::npos;
};
JsonExtent json_extent(const char* s, size_t n) {
  JsonExtent out;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; i++) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      out.deepest = std::max(out.deepest, ++depth);
    } else if ((c == ']' || c == '}') && --depth == 0 && out.end == std::string::npos) {
      out.end = i + 1;
    }
  }
  return out;
}

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A JSON value that must be a non-negative integer, as uint64.
bool json_u64(const nlohmann::json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = (uint64_t)v.get<int64_t>();
    return true;
  }
  return false;
}
}  // namespace

size_t st_dtype_size(StDtype dtype) { return info(dtype).size; }
const char* st_dtype_name(StDtype dtype) { return info(dtype).name; }

StDtype parse_st_dtype(const std::string& name, const std::string& what) {
  for (const DtypeInfo& i : kDtypes)
    if (name == i.name) return i.dtype;
  fail(what, ": unknown safetensors dtype '", name,
       "' (expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64)");
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at parse time not to overflow
  return n;
}

// ---- SafetensorsFile --------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path, "safetensors file"), source_(path) {
  parse(file_.data(), file_.size());
}

SafetensorsFile::SafetensorsFile(const uint8_t* data, size_t size, const std::string& source) : source_(source) {
  parse(data, size);
}

void SafetensorsFile::parse(const uint8_t* data, size_t size) {
  constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit (100 MB)
  OWLORE_REQUIRE(size >= 8, source_, ": not a safetensors file: ", size,
                 " bytes, shorter than the 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, data, 8);
  OWLORE_REQUIRE(header_len <= size - 8, source_, ": header length ", header_len,
                 " runs past the end of the file (", size, " bytes)");
  OWLORE_REQUIRE(header_len <= kMaxHeader, source_, ": header length ", header_len, " exceeds the 100 MB limit");
  const char* header = reinterpret_cast<const char*>(data + 8);
  const JsonExtent extent = json_extent(header, header_len);
  OWLORE_REQUIRE(extent.deepest <= 8, source_, ": header JSON is nested deeper than 8 levels");
  // The header length must frame the JSON object exactly, up to trailing space padding: a length
  // one byte off either cuts the object or takes in a data byte, and one byte short with padding
  // present still parses but shifts every tensor's bytes (caught below: a data byte is left over).
  OWLORE_REQUIRE(header_len > 0 && header[0] == '{', source_,
                 ": header does not start with '{' (expected a JSON object of header length ", header_len, " bytes)");
  OWLORE_REQUIRE(extent.end != std::string::npos, source_, ": header is not valid JSON: the object does not close ",
                 "within the header length ", header_len, " (truncated JSON, or a header length too short)");
  for (size_t i = extent.end; i < header_len; i++)
    OWLORE_REQUIRE(is_json_space(header[i]), source_, ": header length ", header_len, " runs past the JSON object, ",
                   "which ends at byte ", extent.end, " (byte ", i, " has value ", (int)(uint8_t)header[i],
                   " where only space padding may follow: junk after the JSON, or a header length too long)");
  const nlohmann::json root =
      nlohmann::json::parse(header, header + extent.end, nullptr, /*allow_exceptions=*/false);
  OWLORE_REQUIRE(!root.is_discarded(), source_, ": header is not valid JSON");

  const uint8_t* buffer = data + 8 + header_len;
  const uint64_t buffer_size = size - 8 - header_len;
  for (const auto& item : root.items()) {
    const std::string& name = item.key();
    const nlohmann::json& value = item.value();
    if (name == "__metadata__") {
      OWLORE_REQUIRE(value.is_object(), source_, ": __metadata__ is a ", value.type_name(), ", expected an object");
      for (const auto& m : value.items()) {
        OWLORE_REQUIRE(m.value().is_string(), source_, ": __metadata__ key '", m.key(), "' is a ",
                       m.value().type_name(), ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = source_ + ": tensor '" + name + "'";
    OWLORE_REQUIRE(value.is_object(), what, ": entry is a ", value.type_name(), ", expected an object");
    const auto dtype = value.find("dtype");
    const auto shape = value.find("shape");
    const auto offsets = value.find("data_offsets");
    OWLORE_REQUIRE(dtype != value.end() && dtype->is_string(), what, ": missing string field 'dtype'");
    OWLORE_REQUIRE(shape != value.end() && shape->is_array(), what, ": missing array field 'shape'");
    OWLORE_REQUIRE(offsets != value.end() && offsets->is_array() && offsets->size() == 2, what,
                   ": missing field 'data_offsets' = [begin, end]");
    OWLORE_REQUIRE(shape->size() <= 8, what, ": ", shape->size(), " dimensions, expected at most 8");

    StTensor t;
    t.name = name;
    t.dtype = parse_st_dtype(dtype->get<std::string>(), what);
    uint64_t numel = 1;
    for (const nlohmann::json& d : *shape) {
      uint64_t dim;
      OWLORE_REQUIRE(json_u64(d, &dim), what, ": shape entry ", d.dump(), " is not a non-negative integer");
      OWLORE_REQUIRE(dim <= (uint64_t)INT64_MAX && !__builtin_mul_overflow(numel, dim, &numel), what,
                     ": shape ", shape->dump(), " overflows 64 bits");
      t.shape.push_back((int64_t)dim);
    }
    uint64_t nbytes;
    OWLORE_REQUIRE(numel <= (uint64_t)INT64_MAX && !__builtin_mul_overflow(numel, st_dtype_size(t.dtype), &nbytes),
                   what, ": shape ", shape->dump(), " x ", st_dtype_name(t.dtype), " overflows 64 bits");
    OWLORE_REQUIRE(json_u64((*offsets)[0], &t.begin) && json_u64((*offsets)[1], &t.end), what,
                   ": data_offsets ", offsets->dump(), " are not non-negative integers");
    OWLORE_REQUIRE(t.begin <= t.end, what, ": data_offsets ", offsets->dump(), " end before they begin");
    OWLORE_REQUIRE(t.end <= buffer_size, what, ": data_offsets ", offsets->dump(), " run past the end of the data (",
                   buffer_size, " bytes)");
    OWLORE_REQUIRE(t.end - t.begin == nbytes, what, ": shape ", shape->dump(), " x ", st_dtype_name(t.dtype), " is ",
                   nbytes, " bytes but data_offsets ", offsets->dump(), " hold ", t.end - t.begin);
    t.data = buffer + t.begin;
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const StTensor& a, const StTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors tile the data exactly, as the reference reader (huggingface/safetensors
  // validate: InvalidOffset, MetadataIncompleteBuffer) requires: no overlaps, no holes, no
  // trailing bytes. A hole or a tail is what a wrong header length leaves.
  uint64_t covered = 0;
  for (size_t i = 0; i < tensors_.size(); i++) {
    const StTensor& cur = tensors_[i];
    if (i > 0) {
      const StTensor& prev = tensors_[i - 1];
      OWLORE_REQUIRE(cur.begin >= prev.end, source_, ": tensor '", cur.name, "' bytes [", cur.begin, ", ", cur.end,
                     ") overlap tensor '", prev.name, "' bytes [", prev.begin, ", ", prev.end, ")");
    }
    OWLORE_REQUIRE(cur.begin == covered, source_, ": data bytes [", covered, ", ", cur.begin,
                   ") belong to no tensor (a hole before tensor '", cur.name, "'; the format allows none)");
    covered = cur.end;
  }
  OWLORE_REQUIRE(covered == buffer_size, source_, ": the last ", buffer_size - covered, " of ", buffer_size,
                 " data bytes belong to no tensor (a wrong header length, or trailing bytes after the data)");
  for (size_t i = 0; i < tensors_.size(); i++) index_[tensors_[i].name] = i;
}

const StTensor* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensor& SafetensorsFile::get(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) fail(source_, ": tensor '", name, "' not found");
  return *t;
}

void SafetensorsFile::read_float(const StTensor& t, float* out) const {
  const int64_t n = t.numel();
  const uint8_t* p = t.data;
  const bool converts = t.dtype == StDtype::F32 || t.dtype == StDtype::F16 || t.dtype == StDtype::BF16 ||
                        t.dtype == StDtype::F64;
  if (n == 0 && converts) return;  // an empty tensor's pointers may be null, which memcpy must not see
  switch (t.dtype) {
    case StDtype::F32:
      std::memcpy(out, p, (size_t)n * 4);
      return;
    case StDtype::F16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = f16_to_float(h);
      }
      return;
    case StDtype::BF16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      return;
    case StDtype::F64:
      for (int64_t i = 0; i < n; i++) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = (float)d;
      }
      return;
    default:
      fail(source_, ": tensor '", t.name, "' has dtype ", st_dtype_name(t.dtype),
           "; only F32, F16, BF16 and F64 convert to float");
  }
}

std::vector<float> SafetensorsFile::read_float(const StTensor& t) const {
  std::vector<float> out((size_t)t.numel());
  read_float(t, out.data());
  return out;
}

// ---- writing ----------------------------------------------------------------------------------

void write_safetensors(AtomicFile& out, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata) {
  OWLORE_REQUIRE(dtype == StDtype::F32 || dtype == StDtype::F16 || dtype == StDtype::BF16, out.path(),
                 ": can write F32, F16 or BF16, not ", st_dtype_name(dtype));
  const size_t elem = st_dtype_size(dtype);
  // ordered_json keeps the header in data order, which makes files easy to read by eye.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const StWriteTensor& t : tensors) {
    OWLORE_REQUIRE(!header.contains(t.name), out.path(), ": tensor '", t.name, "' written twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      OWLORE_REQUIRE(d >= 0, out.path(), ": tensor '", t.name, "' has a negative dimension");
      numel *= (uint64_t)d;
    }
    header[t.name] = {{"dtype", st_dtype_name(dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + numel * elem}}};
    offset += numel * elem;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();
  out.write(&header_len, 8);
  out.write(text.data(), text.size());

  // Convert in chunks so a 7B model does not need a second full-size copy in memory.
  constexpr int64_t kChunk = 1 << 20;
  std::vector<uint16_t> half;
  for (const StWriteTensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (dtype == StDtype::F32) {
      out.write(t.data, (size_t)numel * 4);
      continue;
    }
    for (int64_t start = 0; start < numel; start += kChunk) {
      const int64_t n = std::min(kChunk, numel - start);
      half.resize((size_t)n);
      if (dtype == StDtype::BF16)
        for (int64_t i = 0; i < n; i++) half[i] = float_to_bf16(t.data[start + i]);
      else
        for (int64_t i = 0; i < n; i++) half[i] = float_to_f16(t.data[start + i]);
      out.write(half.data(), (size_t)n * 2);
    }
  }
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata) {
  AtomicFile out(path);
  write_safetensors(out, tensors, dtype, metadata);
  out.commit();
}

}  // namespace owlore
