// safetensors: fp16/bf16 conversion, write -> read round trips, and bad files that must fail with
// an owlore::Error naming the file and the tensor (never crash). Also replays the safetensors
// fuzz regressions.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("st") {}
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), (std::streamsize)bytes.size());
}

// A safetensors file from raw header text and raw data bytes.
std::string st_bytes(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

// Expects opening `bytes` to throw owlore::Error whose message contains every one of `parts`.
void expect_bad_file(const std::string& bytes, std::initializer_list<std::string> parts) {
  TempDir dir;
  const std::string path = dir.path + "/bad.safetensors";
  write_bytes(path, bytes);
  try {
    SafetensorsFile file(path);
    FAIL() << "expected owlore::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << "message does not name the file: " << message;
    for (const std::string& p : parts)
      EXPECT_NE(message.find(p), std::string::npos) << "message lacks '" << p << "': " << message;
  }
}

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

TEST(Half, F16KnownValues) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);       // largest finite half
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);       // halfway to the next: rounds (to even) to inf
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);       // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);       // tie: rounds to even (0)
  EXPECT_EQ(float_to_f16(std::ldexp(3.0f, -25)), 0x0002);       // 1.5 units: tie to even (2)
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -14)), 0x0400);       // smallest normal
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie below: even mantissa
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie above: rounds up to even
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_f16(INFINITY), 0x7C00);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
}

TEST(Half, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; h++) {
    const float x = f16_to_float((uint16_t)h);
    if (std::isnan(x)) continue;
    ASSERT_EQ(float_to_f16(x), h) << "half 0x" << std::hex << h;
  }
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808000)), 0x3F80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(from_bits(0x3F818000)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808001)), 0x3F81);  // above the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x3F807FFF)), 0x3F80);  // below the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x7F7FFFFF)), 0x7F80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(from_bits(0x7F800001)))));  // signalling NaN stays NaN
  for (uint32_t h = 0; h < 65536; h++) {
    const float x = bf16_to_float((uint16_t)h);
    if (std::isnan(x)) continue;
    ASSERT_EQ(float_to_bf16(x), h);
  }
  EXPECT_EQ(bits(bf16_to_float(0xBF80)), 0xBF800000u);
}

TEST(Safetensors, RoundTripEachDtype) {
  TempDir dir;
  const std::vector<float> a = test::random_vector(3 * 17, 1), b = test::random_vector(5, 2, 100.0f);
  for (StDtype dtype : {StDtype::F32, StDtype::F16, StDtype::BF16}) {
    const std::string path = dir.path + "/x.safetensors";
    write_safetensors(path, {{"layer.a", {3, 17}, a.data()}, {"b", {5}, b.data()}}, dtype,
                      {{"format", "pt"}, {"note", "test"}});
    const SafetensorsFile file(path);
    ASSERT_EQ(file.tensors().size(), 2u);
    EXPECT_EQ(file.metadata().at("format"), "pt");
    EXPECT_EQ(file.metadata().at("note"), "test");
    const StTensor& ta = file.get("layer.a");
    EXPECT_EQ(ta.dtype, dtype);
    EXPECT_EQ(ta.shape, (std::vector<int64_t>{3, 17}));
    EXPECT_EQ(ta.begin % 8, 0u);
    const std::vector<float> ra = file.read_float(ta), rb = file.read_float(file.get("b"));
    for (size_t i = 0; i < a.size(); i++) {
      const float want = dtype == StDtype::F32   ? a[i]
                         : dtype == StDtype::F16 ? f16_to_float(float_to_f16(a[i]))
                                                 : bf16_to_float(float_to_bf16(a[i]));
      ASSERT_EQ(ra[i], want) << st_dtype_name(dtype) << " element " << i;
    }
    EXPECT_EQ(rb[0], dtype == StDtype::F32 ? b[0] : rb[0]);
    EXPECT_LE(test::rel_error(rb, b), dtype == StDtype::F32 ? 0.0 : 1e-2);
    // The header length keeps the data 8-byte aligned (recommended by the format).
    std::ifstream in(path, std::ios::binary);
    uint64_t header_len = 0;
    in.read(reinterpret_cast<char*>(&header_len), 8);
    EXPECT_EQ(header_len % 8, 0u);
  }
}

TEST(Safetensors, ReadsForeignLayoutAndIgnoresOrder) {
  // Hand-written header: tensors listed out of byte order, an F64 and an I64 tensor, empty tensor.
  std::string data;
  const double d[2] = {1.5, -2.25};
  const int64_t i64 = 7;
  data.append(reinterpret_cast<const char*>(&i64), 8);
  data.append(reinterpret_cast<const char*>(d), 16);
  const std::string header =
      R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[8,24]},"n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("e":{"dtype":"F16","shape":[0,4],"data_offsets":[24,24]}})";
  TempDir dir;
  write_bytes(dir.path + "/f.safetensors", st_bytes(header, data));
  const SafetensorsFile file(dir.path + "/f.safetensors");
  EXPECT_EQ(file.read_float(file.get("w")), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_TRUE(file.read_float(file.get("e")).empty());
  try {
    file.read_float(file.get("n"));
    FAIL() << "I64 must not convert";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'n' has dtype I64"), std::string::npos) << e.what();
  }
  try {
    file.get("missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'missing' not found"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, BadFilesFailWithNamedErrors) {
  const std::string four(4, 'x');
  expect_bad_file("abc", {"shorter than the 8-byte header length"});
  expect_bad_file(st_bytes("{}", "").substr(0, 8) + "{", {"header length 2 runs past the end"});
  {
    uint64_t huge = ~0ull;
    expect_bad_file(std::string(reinterpret_cast<const char*>(&huge), 8) + "{}", {"runs past the end of the file"});
  }
  expect_bad_file(st_bytes("[1, 2]", ""), {"header does not start with '{'"});
  expect_bad_file(st_bytes("{\"a\": ", ""), {"header is not valid JSON"});
  expect_bad_file(st_bytes(std::string(100, '[') + std::string(100, ']'), ""), {"nested deeper"});
  expect_bad_file(st_bytes(R"({"t": 3})", ""), {"tensor 't'", "expected an object"});
  expect_bad_file(st_bytes(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})", four), {"tensor 't'", "'dtype'"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}})", four),
                  {"tensor 't'", "unknown safetensors dtype 'F17'"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", four),
                  {"tensor 't'", "not a non-negative integer"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", four),
                  {"tensor 't'", "not a non-negative integer"});
  expect_bad_file(st_bytes(R"({"big": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})",
                           four),
                  {"tensor 'big'", "overflows 64 bits"});
  expect_bad_file(st_bytes(R"({"big": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 4]}})",
                           four),
                  {"tensor 'big'", "overflows 64 bits"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", four),
                  {"tensor 't'", "is 8 bytes but data_offsets [0,4] hold 4"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", four),
                  {"tensor 't'", "run past the end of the data (4 bytes)"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", four),
                  {"tensor 't'", "end before they begin"});
  expect_bad_file(st_bytes(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", four),
                  {"tensor 't'", "data_offsets"});
  expect_bad_file(
      st_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
               std::string(8, 'x')),
      {"tensor 'b'", "overlap tensor 'a'"});
  expect_bad_file(st_bytes(R"({"__metadata__": {"format": 3}})", ""), {"__metadata__ key 'format'"});
  expect_bad_file(st_bytes(R"({"__metadata__": []})", ""), {"__metadata__ is a array"});
}

TEST(Safetensors, HeaderLengthMustFrameTheJsonExactly) {
  // A header padded with spaces (as writers pad it to 8 bytes) and two tensors that fill the data.
  const float values[3] = {1.0f, 2.0f, 3.0f};
  const std::string data(reinterpret_cast<const char*>(values), sizeof values);
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string padded = json + "    ";
  auto with_length = [&](uint64_t n, const std::string& header, const std::string& body) {
    return std::string(reinterpret_cast<const char*>(&n), 8) + header + body;
  };
  TempDir dir;
  write_bytes(dir.path + "/ok.safetensors", with_length(padded.size(), padded, data));
  const SafetensorsFile ok(dir.path + "/ok.safetensors");
  EXPECT_EQ(ok.read_float(ok.get("b")), (std::vector<float>{3.0f}));
  // Any JSON whitespace may pad the header, as the reference reader (serde_json) accepts it.
  const std::string newline = json + " \n\t\r";
  write_bytes(dir.path + "/nl.safetensors", with_length(newline.size(), newline, data));
  EXPECT_EQ(SafetensorsFile(dir.path + "/nl.safetensors").tensors().size(), 2u);

  // One byte short: still valid JSON (a space less), but every tensor's bytes would shift by one.
  expect_bad_file(with_length(padded.size() - 1, padded, data), {"the last 1 of 13 data bytes belong to no tensor"});
  // One byte long: the first data byte joins the header.
  expect_bad_file(with_length(padded.size() + 1, padded, data), {"runs past the JSON object", "junk after the JSON"});
  // Without padding, one short cuts the closing brace.
  expect_bad_file(with_length(json.size() - 1, json, data), {"not valid JSON", "does not close", "too short"});
  // Junk after the object, inside the header.
  expect_bad_file(with_length(json.size() + 3, json + "  x", data), {"byte " + std::to_string(json.size() + 2)});
  // Trailing bytes after the last tensor, and a hole between tensors.
  expect_bad_file(with_length(padded.size(), padded, data + "zz"), {"the last 2 of 14 data bytes belong to no tensor"});
  const std::string holed = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  expect_bad_file(with_length(holed.size(), holed, data), {"data bytes [4, 8) belong to no tensor", "before tensor 'b'"});
}

TEST(Safetensors, EveryTruncationFailsCleanly) {
  TempDir dir;
  const std::vector<float> a = test::random_vector(40, 3);
  const std::string path = dir.path + "/ok.safetensors";
  write_safetensors(path, {{"a", {5, 8}, a.data()}, {"b", {8}, a.data()}}, StDtype::BF16);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t n = 0; n < bytes.size(); n++) {
    const std::string cut = bytes.substr(0, n);
    EXPECT_THROW(SafetensorsFile(reinterpret_cast<const uint8_t*>(cut.data()), cut.size(), "cut"), Error)
        << "prefix of " << n << " bytes";
  }
}

TEST(Safetensors, MissingFileNamesPath) {
  try {
    SafetensorsFile file("/nonexistent/owlore/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/owlore/x.safetensors: cannot open"), std::string::npos);
  }
}

TEST(Safetensors, AtomicFileLeavesOldFileWhenNotCommitted) {
  TempDir dir;
  const std::string path = dir.path + "/f.bin";
  write_bytes(path, "old");
  {
    AtomicFile f(path);
    f.write("new contents", 12);
    // destroyed without commit: as if an exception interrupted the save
  }
  std::ifstream in(path);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()), 1) << "temporary file left";
  {
    AtomicFile f(path);
    f.write("new", 3);
    f.commit();
  }
  std::ifstream in2(path);
  in2 >> s;
  EXPECT_EQ(s, "new");
}

// Inputs on which the fuzz target once crashed (tests/data/fuzz_regressions): its work (parse,
// convert every tensor) must end in an owlore::Error or a clean return, nothing else. test_checkpoint's
// FuzzRegressions.LoadModelFails loads each through load_model and expects an owlore::Error.
TEST(Safetensors, FuzzRegressionsReplayCleanly) {
  const fs::path dir = fs::path(OWLORE_SOURCE_DIR) / "tests/data/fuzz_regressions";
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("safetensors-", 0) != 0) continue;
    EXPECT_NO_THROW({
      try {
        const SafetensorsFile file(entry.path().string());
        for (const StTensor& t : file.tensors()) {
          try {
            file.read_float(t);
          } catch (const Error&) {
          }
        }
      } catch (const Error&) {
      }
    }) << entry.path();
  }
}

}  // namespace
}  // namespace owlore
