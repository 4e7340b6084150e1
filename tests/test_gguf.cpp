// GGUF: metadata of every value type, dequantization of each supported type against hand-computed
// values, the Q/K RoPE row permutation, llama config, load_model on a GGUF built here, bad files
// that must fail with an owlore::Error naming the file and key/tensor, and the fuzz regressions.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/model_info.h"
#include "io/model_tokenizer.h"
#include "io/safetensors.h"
#include "model/layout.h"
#include "child_test_util.h"
#include "gguf_writer.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;

using test::expect_error;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("gguf") {}
};

using test::GgufWriter;
using test::put;
using test::put_str;

GgufFile open_bytes(const std::string& bytes, const std::string& name = "mem.gguf") {
  return GgufFile(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

// Expects parsing `bytes` to throw an owlore::Error containing every part.
void expect_bad(const std::string& bytes, std::initializer_list<std::string> parts) {
  try {
    open_bytes(bytes, "bad.gguf");
    FAIL() << "expected owlore::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("bad.gguf"), std::string::npos) << "message does not name the file: " << message;
    for (const std::string& p : parts)
      EXPECT_NE(message.find(p), std::string::npos) << "message lacks '" << p << "': " << message;
  }
}

std::string f16_bytes(float x) {
  std::string s;
  put<uint16_t>(s, float_to_f16(x));
  return s;
}

// ---- dequantization ---------------------------------------------------------------------------

TEST(GgufDequant, Q8_0) {
  // Two blocks: d = 0.5 with q = j - 16, d = -0.25 with q = 3 * j - 50.
  std::string bytes;
  std::vector<float> want;
  for (const auto& [d, a, b] : {std::tuple{0.5f, 1, -16}, std::tuple{-0.25f, 3, -50}}) {
    bytes += f16_bytes(d);
    for (int j = 0; j < 32; j++) {
      const int8_t q = (int8_t)(a * j + b);
      bytes += (char)q;
      want.push_back(d * q);
    }
  }
  std::vector<float> got(64);
  dequantize(GgmlType::Q8_0, reinterpret_cast<const uint8_t*>(bytes.data()), 64, got.data(), "t");
  EXPECT_EQ(got, want);
  EXPECT_EQ(got[0], -8.0f);   // 0.5 * -16
  EXPECT_EQ(got[63], -10.75f);  // -0.25 * (3 * 31 - 50)
}

TEST(GgufDequant, Q4_0LowNibblesFirst) {
  // d = 0.5; byte j holds element j in its low nibble (q = j) and element 16 + j in its high
  // nibble (q = 15 - j); x = d * (q - 8).
  std::string bytes = f16_bytes(0.5f);
  for (int j = 0; j < 16; j++) bytes += (char)(j | ((15 - j) << 4));
  std::vector<float> got(32);
  dequantize(GgmlType::Q4_0, reinterpret_cast<const uint8_t*>(bytes.data()), 32, got.data(), "t");
  for (int j = 0; j < 16; j++) {
    EXPECT_EQ(got[j], 0.5f * (j - 8)) << j;
    EXPECT_EQ(got[16 + j], 0.5f * (15 - j - 8)) << 16 + j;
  }
  EXPECT_EQ(got[0], -4.0f);
  EXPECT_EQ(got[16], 3.5f);
}

TEST(GgufDequant, Q4_1) {
  // d = 0.25, m = -1; low nibble q = (3j) mod 16, high nibble q = j; x = d * q + m.
  std::string bytes = f16_bytes(0.25f) + f16_bytes(-1.0f);
  for (int j = 0; j < 16; j++) bytes += (char)(((3 * j) % 16) | (j << 4));
  std::vector<float> got(32);
  dequantize(GgmlType::Q4_1, reinterpret_cast<const uint8_t*>(bytes.data()), 32, got.data(), "t");
  for (int j = 0; j < 16; j++) {
    EXPECT_EQ(got[j], 0.25f * ((3 * j) % 16) - 1.0f) << j;
    EXPECT_EQ(got[16 + j], 0.25f * j - 1.0f) << 16 + j;
  }
  EXPECT_EQ(got[31], 2.75f);
}

TEST(GgufDequant, FloatTypesAndUnsupported) {
  GgufWriter w;
  const float f[3] = {1.0f, -0.5f, 3.25f};
  w.tensor_f32("f32", {3}, f);
  std::string h, b;
  for (float x : f) {
    put<uint16_t>(h, float_to_f16(x));
    put<uint16_t>(b, float_to_bf16(x));
  }
  w.tensor("f16", GgmlType::F16, {3}, h);
  w.tensor("bf16", GgmlType::BF16, {3}, b);
  w.tensor("q4k", GgmlType::Q4_K, {256}, std::string(144, '\x01'));
  const std::string bytes = w.build();
  const GgufFile file = open_bytes(bytes);
  const std::vector<float> want(f, f + 3);
  EXPECT_EQ(file.dequantize(*file.find_tensor("f32")), want);
  EXPECT_EQ(file.dequantize(*file.find_tensor("f16")), want);
  EXPECT_EQ(file.dequantize(*file.find_tensor("bf16")), want);
  expect_error([&] { file.dequantize(*file.find_tensor("q4k")); }, {"mem.gguf", "tensor 'q4k'", "Q4_K"});
}

TEST(GgufDequant, QuantizedTensorsInAFile) {
  // A 2-D Q8_0 tensor: ne = [64, 2] is two rows of two blocks each.
  GgufWriter w;
  std::string bytes;
  for (int block = 0; block < 4; block++) {
    bytes += f16_bytes(0.125f * (block + 1));
    for (int j = 0; j < 32; j++) bytes += (char)(int8_t)(j - block);
  }
  w.tensor("q", GgmlType::Q8_0, {64, 2}, bytes);
  const std::string file_bytes = w.build();
  const GgufFile file = open_bytes(file_bytes);
  const GgufTensor& t = *file.find_tensor("q");
  EXPECT_EQ(t.hf_shape(), (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(t.nbytes, 4u * 34);
  const std::vector<float> x = file.dequantize(t);
  EXPECT_EQ(x[64 + 32 + 5], 0.5f * (5 - 3));  // row 1, block 3, element 5
}

// ---- the RoPE row permutation -----------------------------------------------------------------

TEST(GgufRope, PermutationMatchesConverterByHand) {
  // One head of 4 rows: HF (rotate-half) rows [r0 r1 | r2 r3] pair (r0, r2), (r1, r3); the converter
  // interleaves pairs: GGUF rows are [r0 r2 r1 r3].
  std::vector<float> w = {0, 0, 1, 1, 2, 2, 3, 3};  // (4, 2), row r holds r
  permute_rows_for_interleaved_rope(w.data(), 4, 2, 1);
  EXPECT_EQ(w, (std::vector<float>{0, 0, 2, 2, 1, 1, 3, 3}));
  // Two heads of 6 rows: reshape(2, 2, 3).swapaxes(1, 2): within a head [0 3 1 4 2 5].
  std::vector<float> v(12);
  for (int i = 0; i < 12; i++) v[i] = (float)i;
  permute_rows_for_interleaved_rope(v.data(), 12, 1, 2);
  EXPECT_EQ(v, (std::vector<float>{0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11}));
  unpermute_rows_from_interleaved_rope(v.data(), 12, 1, 2);
  for (int i = 0; i < 12; i++) EXPECT_EQ(v[i], (float)i);
}

TEST(GgufRope, RoundTripOddShapes) {
  for (const auto& [heads, head_dim, cols] : {std::tuple{9, 64, 7}, std::tuple{3, 10, 45}, std::tuple{1, 2, 1}}) {
    const int64_t rows = (int64_t)heads * head_dim;
    const std::vector<float> original = test::random_vector(rows * cols, 11 + heads);
    std::vector<float> w = original;
    permute_rows_for_interleaved_rope(w.data(), rows, cols, heads);
    if (head_dim > 2) {
      EXPECT_NE(w, original);
    }
    unpermute_rows_from_interleaved_rope(w.data(), rows, cols, heads);
    EXPECT_EQ(w, original);
  }
  expect_error([] {
    std::vector<float> w(9);
    unpermute_rows_from_interleaved_rope(w.data(), 9, 1, 3);
  }, {"heads of even size"});
}

// ---- metadata ---------------------------------------------------------------------------------

TEST(GgufMetadata, EveryValueType) {
  GgufWriter w;
  w.scalar<uint8_t>("u8", GgufValueType::UINT8, 200);
  w.scalar<int8_t>("i8", GgufValueType::INT8, -100);
  w.scalar<uint16_t>("u16", GgufValueType::UINT16, 60000);
  w.scalar<int16_t>("i16", GgufValueType::INT16, -30000);
  w.u32("u32", 4000000000u);
  w.scalar<int32_t>("i32", GgufValueType::INT32, -2000000000);
  w.f32("f32", 0.25f);
  w.scalar<uint8_t>("bool", GgufValueType::BOOL, 1);
  w.string("str", "héllo");
  w.scalar<uint64_t>("u64", GgufValueType::UINT64, 1ull << 40);
  w.scalar<int64_t>("i64", GgufValueType::INT64, -(1ll << 40));
  w.scalar<double>("f64", GgufValueType::FLOAT64, 1e-300);
  w.strings("strs", {"a", "", "Ġthe"});
  w.i32s("ints", {1, -2, 3});
  w.key("floats", GgufValueType::ARRAY);
  put<uint32_t>(w.kvs, (uint32_t)GgufValueType::FLOAT32);
  put<uint64_t>(w.kvs, 2);
  put<float>(w.kvs, 1.5f);
  put<float>(w.kvs, -2.0f);
  w.key("nested", GgufValueType::ARRAY);  // array of 2 arrays of uint16
  put<uint32_t>(w.kvs, (uint32_t)GgufValueType::ARRAY);
  put<uint64_t>(w.kvs, 2);
  for (int a = 0; a < 2; a++) {
    put<uint32_t>(w.kvs, (uint32_t)GgufValueType::UINT16);
    put<uint64_t>(w.kvs, 1);
    put<uint16_t>(w.kvs, (uint16_t)(10 + a));
  }
  w.version = 2;
  const std::string bytes = w.build();
  const GgufFile f = open_bytes(bytes);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.keys().size(), 16u);
  EXPECT_EQ(f.get_int("u8"), 200);
  EXPECT_EQ(f.get_int("i8"), -100);
  EXPECT_EQ(f.get_int("u16"), 60000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.get_float("f32"), 0.25);
  EXPECT_TRUE(f.get_bool("bool"));
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(f.get_int("u64"), 1ll << 40);
  EXPECT_EQ(f.get_int("i64"), -(1ll << 40));
  EXPECT_EQ(f.get_float("f64"), 1e-300);
  EXPECT_EQ(f.get_float("u32"), 4e9);  // integers read as floats
  EXPECT_EQ(f.get_string_array("strs"), (std::vector<std::string>{"a", "", "Ġthe"}));
  EXPECT_EQ(f.get_int_array("ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_float_array("floats"), (std::vector<double>{1.5, -2.0}));
  const GgufValue& nested = f.get("nested");
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[1].ints, (std::vector<int64_t>{11}));
  EXPECT_EQ(nested.type_name(), "array of array of uint16");
  EXPECT_EQ(f.get_int("absent", 7), 7);
  EXPECT_EQ(f.get_string("absent", "x"), "x");

  expect_error([&] { f.get_int("str"); }, {"mem.gguf", "metadata key 'str' is string, expected an integer"});
  expect_error([&] { f.get_string("u32"); }, {"metadata key 'u32' is uint32, expected a string"});
  expect_error([&] { f.get_string_array("ints"); }, {"metadata key 'ints' is array of int32, expected an array of string"});
  expect_error([&] { f.get_int_array("strs"); }, {"metadata key 'strs' is array of string, expected an array of integers"});
  expect_error([&] { f.get_float("strs"); }, {"metadata key 'strs'", "expected a float"});
  expect_error([&] { f.get_int("missing"); }, {"metadata key 'missing' not found (expected an integer)"});
  expect_error([&] { f.get_int("str", 3); }, {"metadata key 'str' is string"});  // fallback only for absent keys
}

// ---- llama config and load_model --------------------------------------------------------------

// What a test changes in the file write_llama_gguf writes.
struct GgufEdits {
  int64_t block_count = -1;  // llama.block_count when >= 0 (else the config's)
  std::optional<float> freq_base, rms_eps;  // instead of the config's
  std::vector<std::string> extra_tensors;   // more F32 tensors of two elements
  std::string nan_tensor;                   // this tensor's element 3 is NaN
};

// A complete llama GGUF for `config`, with all tensors F32 (so load_model must reproduce
// `weights` exactly), wq/wk permuted the way llama.cpp's converter stores them.
void write_llama_gguf(const std::string& path, const ModelConfig& c, const std::vector<float>& weights,
                      const GgufEdits& edits = {}) {
  GgufWriter w;
  w.string("general.architecture", "llama");
  w.string("general.name", "test-llama");
  w.u32("llama.block_count", edits.block_count >= 0 ? (uint32_t)edits.block_count : c.n_layers);
  w.u32("llama.embedding_length", c.d_model);
  w.u32("llama.feed_forward_length", c.ffn);
  w.u32("llama.attention.head_count", c.n_heads);
  w.u32("llama.attention.head_count_kv", c.n_kv_heads);
  w.u32("llama.rope.dimension_count", c.head_dim);
  // The tiny presets have head_dim != d_model / n_heads; llama.cpp writes key_length then.
  w.u32("llama.attention.key_length", c.head_dim);
  w.u32("llama.attention.value_length", c.head_dim);
  w.f32("llama.rope.freq_base", edits.freq_base.value_or(c.rope_theta));
  w.f32("llama.attention.layer_norm_rms_epsilon", edits.rms_eps.value_or(c.norm_eps));
  w.u32("llama.context_length", c.max_seq);
  std::vector<std::string> tokens;
  for (int i = 0; i < c.vocab; i++) tokens.push_back("t" + std::to_string(i));
  w.strings("tokenizer.ggml.tokens", tokens);
  w.strings("tokenizer.ggml.merges", {"t 1", "t1 0"});
  w.i32s("tokenizer.ggml.token_type", std::vector<int32_t>(c.vocab, 1));
  w.string("tokenizer.ggml.model", "gpt2");
  w.string("tokenizer.ggml.pre", "smollm");
  w.u32("tokenizer.ggml.bos_token_id", 1);
  w.u32("tokenizer.ggml.eos_token_id", 2);
  const ModelLayout layout(c);
  std::vector<float> stored = weights;
  for (const TensorSlot& slot : layout.tensors) {
    float* p = stored.data() + slot.offset;
    if (slot.name.find("q_proj") != std::string::npos)
      permute_rows_for_interleaved_rope(p, slot.rows, slot.cols, c.n_heads);
    if (slot.name.find("k_proj") != std::string::npos)
      permute_rows_for_interleaved_rope(p, slot.rows, slot.cols, c.n_kv_heads);
    std::vector<uint64_t> ne = {(uint64_t)slot.cols};
    if (slot.rows > 1) ne.push_back((uint64_t)slot.rows);
    if (gguf_name_for_hf(slot.name) == edits.nan_tensor) p[3] = std::nanf("");
    w.tensor_f32(gguf_name_for_hf(slot.name), ne, p);
  }
  const float inv_freq[2] = {1.0f, 0.5f};
  w.tensor_f32("blk.0.attn_rot_embd.weight", {2}, inv_freq);  // the inv_freq buffer: harmless, ignored
  for (const std::string& name : edits.extra_tensors) w.tensor_f32(name, {2}, inv_freq);
  w.save(path);
}

ModelConfig small_config(bool tied) {
  ModelConfig c = preset_config(tied ? "tiny-tied" : "tiny");
  c.name = "test-llama";
  return c;
}

TEST(GgufModel, ConfigAndTokenizerMetadata) {
  TempDir dir;
  const ModelConfig c = small_config(false);
  const std::vector<float> weights = test::random_vector(ModelLayout(c).total, 5);
  write_llama_gguf(dir.path + "/m.gguf", c, weights);
  const GgufFile f(dir.path + "/m.gguf");
  const ModelConfig got = f.config();
  EXPECT_EQ(got.n_layers, c.n_layers);
  EXPECT_EQ(got.d_model, c.d_model);
  EXPECT_EQ(got.n_heads, c.n_heads);
  EXPECT_EQ(got.n_kv_heads, c.n_kv_heads);
  EXPECT_EQ(got.head_dim, c.head_dim);
  EXPECT_EQ(got.ffn, c.ffn);
  EXPECT_EQ(got.vocab, c.vocab);  // from the token list
  EXPECT_EQ(got.max_seq, c.max_seq);
  EXPECT_EQ(got.rope_theta, c.rope_theta);
  EXPECT_EQ(got.norm_eps, c.norm_eps);
  EXPECT_FALSE(got.tied_embeddings);
  EXPECT_EQ(got.bos_token, 1);
  EXPECT_EQ(got.eos_token, 2);
  EXPECT_EQ(got.name, "test-llama");
  EXPECT_EQ(f.tokens().size(), (size_t)c.vocab);
  EXPECT_EQ(f.tokens()[7], "t7");
  EXPECT_EQ(f.merges(), (std::vector<std::string>{"t 1", "t1 0"}));
  EXPECT_EQ(f.token_types().size(), (size_t)c.vocab);
  EXPECT_EQ(f.tokenizer_pre(), "smollm");
  EXPECT_EQ(f.tokenizer_model(), "gpt2");
  EXPECT_EQ(f.padding_id(), -1);
}

TEST(GgufModel, LoadModelUnpermutesQKAndMatchesHfOrder) {
  for (bool tied : {false, true}) {
    TempDir dir;
    const ModelConfig c = small_config(tied);
    const std::vector<float> weights = test::random_vector(ModelLayout(c).total, 6);
    const std::string path = dir.path + "/m.gguf";
    write_llama_gguf(path, c, weights);
    const LoadedModel m = load_model(path);
    EXPECT_EQ(m.config.tied_embeddings, tied);
    EXPECT_EQ(m.source, path);
    ASSERT_EQ(m.weights.size(), weights.size());
    EXPECT_EQ(m.weights, weights) << (tied ? "tied" : "untied");
  }
}

TEST(GgufModel, MissingAndMisshapenTensorsAreNamed) {
  TempDir dir;
  const ModelConfig c = small_config(true);
  const ModelLayout layout(c);
  std::vector<float> weights = test::random_vector(layout.total, 7);
  // Write a file whose ffn_up has the wrong shape and whose ffn_down is missing.
  GgufWriter w;
  w.string("general.architecture", "llama");
  w.u32("llama.block_count", c.n_layers);
  w.u32("llama.embedding_length", c.d_model);
  w.u32("llama.feed_forward_length", c.ffn);
  w.u32("llama.attention.head_count", c.n_heads);
  w.u32("llama.attention.head_count_kv", c.n_kv_heads);
  w.u32("llama.vocab_size", c.vocab);
  for (const TensorSlot& slot : layout.tensors) {
    const std::string name = gguf_name_for_hf(slot.name);
    if (name == "blk.1.ffn_down.weight") continue;
    std::vector<uint64_t> ne = {(uint64_t)slot.cols};
    if (slot.rows > 1) ne.push_back((uint64_t)slot.rows - (name == "blk.0.ffn_up.weight" ? 1 : 0));
    w.tensor_f32(name, ne, weights.data() + slot.offset);
  }
  w.save(dir.path + "/bad.gguf");
  expect_error([&] { load_model(dir.path + "/bad.gguf"); },
               {dir.path + "/bad.gguf", "blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight",
                "has shape [52, 36]", "expected [53, 36]"});
}

TEST(GgufModel, TensorsTheMetadataDoesNotUseAreErrors) {
  TempDir dir;
  const ModelConfig c = small_config(false);  // 3 blocks
  const std::vector<float> weights = test::random_vector(ModelLayout(c).total, 9);
  GgufEdits fewer;
  fewer.block_count = 1;
  write_llama_gguf(dir.path + "/fewer.gguf", c, weights, fewer);
  expect_error([&] { load_model(dir.path + "/fewer.gguf"); },
               {dir.path + "/fewer.gguf", "18 tensors that the model does not use", "'blk.1.attn_k.weight'",
                "llama.block_count is 1, but the file holds blocks up to 2"});
  // llama.cpp's per-frequency RoPE scaling (Llama 3.1): plain RoPE would run the model wrong.
  GgufEdits rope;
  rope.extra_tensors = {"rope_freqs.weight"};
  write_llama_gguf(dir.path + "/rope.gguf", c, weights, rope);
  expect_error([&] { load_model(dir.path + "/rope.gguf"); }, {"1 tensor that the model does not use: 'rope_freqs.weight'"});
  // More blocks named than the file has tensors for fails before the layout is built.
  GgufEdits huge;
  huge.block_count = 2147483647;
  write_llama_gguf(dir.path + "/huge.gguf", c, weights, huge);
  test::expect_refused_in_child([&] { load_model(dir.path + "/huge.gguf"); },
                                {"llama.block_count is 2147483647", "holds tensors of 3 layers"}, "huge block count");
}

TEST(GgufModel, NonFiniteTensorIsNamed) {
  TempDir dir;
  const ModelConfig c = small_config(true);
  GgufEdits nan;
  nan.nan_tensor = "blk.1.ffn_gate.weight";
  write_llama_gguf(dir.path + "/nan.gguf", c, test::random_vector(ModelLayout(c).total, 10), nan);
  expect_error([&] { load_model(dir.path + "/nan.gguf"); },
               {dir.path + "/nan.gguf", "tensor 'blk.1.ffn_gate.weight' holds 1 non-finite values", "first at element 3"});
}

TEST(GgufModel, RopeBaseAndNormEpsilonMustBeFiniteAndPositive) {
  TempDir dir;
  const ModelConfig c = small_config(true);
  const std::vector<float> weights = test::random_vector(ModelLayout(c).total, 11);
  for (const float bad : {INFINITY, -INFINITY, NAN, 0.0f, -1.0f}) {
    for (const bool base : {true, false}) {
      GgufEdits e;
      (base ? e.freq_base : e.rms_eps) = bad;
      write_llama_gguf(dir.path + "/m.gguf", c, weights, e);
      const std::string key = base ? "llama.rope.freq_base" : "llama.attention.layer_norm_rms_epsilon";
      expect_error([&] { GgufFile(dir.path + "/m.gguf").config(); },
                   {dir.path + "/m.gguf", "metadata key '" + key + "' = ", "expected a finite 32-bit float > 0"});
    }
  }
}

TEST(GgufModel, ConfigErrorsNameTheKey) {
  GgufWriter w;
  w.string("general.architecture", "llama");
  w.u32("llama.block_count", 2);
  const std::string bytes = w.build();
  expect_error([&] { open_bytes(bytes).config(); }, {"mem.gguf", "metadata key 'llama.embedding_length' not found"});
  GgufWriter g;
  g.string("general.architecture", "gpt2");
  const std::string gb = g.build();
  expect_error([&] { open_bytes(gb).config(); }, {"general.architecture is 'gpt2', expected 'llama'"});
  GgufWriter s;
  s.f32("general.architecture", 1.0f);
  const std::string sb = s.build();
  expect_error([&] { open_bytes(sb).config(); }, {"metadata key 'general.architecture' is float32, expected a string"});
}

TEST(GgufModel, ModelInfoListsTypesAndTokenizer) {
  TempDir dir;
  const ModelConfig c = small_config(true);
  write_llama_gguf(dir.path + "/m.gguf", c, test::random_vector(ModelLayout(c).total, 8));
  std::ostringstream out;
  print_model_info(dir.path + "/m.gguf", out);
  const std::string s = out.str();
  EXPECT_NE(s.find("GGUF v3"), std::string::npos) << s;
  EXPECT_NE(s.find("layers            2"), std::string::npos) << s;
  EXPECT_NE(s.find("parameters (config): " + std::to_string(c.total_params())), std::string::npos) << s;
  EXPECT_NE(s.find("F32: " + std::to_string(ModelLayout(c).tensors.size() + 1) + " tensors"), std::string::npos) << s;
  EXPECT_NE(s.find("tokenizer: 259 tokens, 2 merges"), std::string::npos) << s;
}

// ---- bad files --------------------------------------------------------------------------------

TEST(GgufBadFiles, HeaderErrors) {
  expect_bad("GGU", {"no 'GGUF' magic"});
  expect_bad("GGML\x03\0\0\0", {"no 'GGUF' magic"});
  std::string v1 = "GGUF";
  put<uint32_t>(v1, 1);
  expect_bad(v1, {"version 1 is not supported"});
  std::string be = "GGUF";
  put<uint32_t>(be, 0x03000000);
  expect_bad(be, {"version 50331648"});
  std::string counts = "GGUF";
  put<uint32_t>(counts, 3);
  put<uint64_t>(counts, 0);
  put<uint64_t>(counts, 1ull << 60);
  expect_bad(counts, {"metadata count 1152921504606846976 cannot fit"});
  std::string tcounts = "GGUF";
  put<uint32_t>(tcounts, 3);
  put<uint64_t>(tcounts, 1000);
  put<uint64_t>(tcounts, 0);
  expect_bad(tcounts, {"tensor count 1000 cannot fit"});
}

TEST(GgufBadFiles, MetadataErrors) {
  {
    GgufWriter w;
    w.key("k", GgufValueType::STRING);
    put<uint64_t>(w.kvs, 1ull << 62);  // string length past the end
    expect_bad(w.build(), {"metadata key 'k'", "length 4611686018427387904 runs past the end"});
  }
  {
    GgufWriter w;
    w.key("arr", GgufValueType::ARRAY);
    put<uint32_t>(w.kvs, (uint32_t)GgufValueType::UINT64);
    put<uint64_t>(w.kvs, 1ull << 61);  // absurd count: must not allocate
    expect_bad(w.build(), {"metadata key 'arr'", "array of 2305843009213693952 uint64 runs past the end"});
  }
  {
    GgufWriter w;
    w.key("t", (GgufValueType)77);
    expect_bad(w.build(), {"metadata key 't'", "unknown value type 77"});
  }
  {
    GgufWriter w;
    w.scalar<uint8_t>("b", GgufValueType::BOOL, 2);
    expect_bad(w.build(), {"metadata key 'b'", "bool value 2"});
  }
  {
    GgufWriter w;
    w.u32("dup", 1);
    w.u32("dup", 2);
    expect_bad(w.build(), {"metadata key 'dup' appears twice"});
  }
  {
    GgufWriter w;
    w.u32("general.alignment", 24);
    expect_bad(w.build(), {"general.alignment 24 is not a power of two"});
  }
  {
    GgufWriter w;
    w.f32("general.alignment", 32.0f);
    expect_bad(w.build(), {"metadata key 'general.alignment' is float32, expected uint32"});
  }
  {
    // Arrays nested past the depth limit.
    GgufWriter w;
    w.key("deep", GgufValueType::ARRAY);
    for (int i = 0; i < 10; i++) {
      put<uint32_t>(w.kvs, (uint32_t)GgufValueType::ARRAY);
      put<uint64_t>(w.kvs, 1);
    }
    w.kvs.append(64, '\0');
    expect_bad(w.build(), {"metadata key 'deep'", "nested deeper"});
  }
}

TEST(GgufBadFiles, TensorInfoErrors) {
  const float x[32] = {};
  {
    GgufWriter w;
    w.tensor_f32("t", {4}, x);
    std::string b = w.build();
    b.resize(b.size() - 8);  // data cut short
    expect_bad(b, {"tensor 't'", "run past the end of the data section"});
  }
  {
    GgufWriter w;
    w.tensor("t", (GgmlType)99, {4}, std::string(16, '\0'));
    expect_bad(w.build(), {"tensor 't'", "unknown ggml type 99"});
  }
  {
    GgufWriter w;
    w.tensor("t", GgmlType::F32, {1, 1, 1, 1, 1}, std::string(4, '\0'));
    expect_bad(w.build(), {"tensor 't'", "5 dimensions"});
  }
  {
    GgufWriter w;
    w.tensor("t", GgmlType::F32, {1ull << 32, 1ull << 32}, "");
    expect_bad(w.build(), {"tensor 't'", "overflow"});
  }
  {
    GgufWriter w;
    w.tensor("t", GgmlType::Q8_0, {33}, std::string(68, '\0'));
    expect_bad(w.build(), {"tensor 't'", "not a multiple of the Q8_0 block size 32"});
  }
  {
    GgufWriter w;
    w.tensor_f32("a", {8}, x);
    w.tensor_f32("a", {8}, x);
    expect_bad(w.build(), {"tensor 'a'", "appears twice"});
  }
  {
    // Overlap: b's info points into a's bytes.
    GgufWriter w;
    w.tensor_f32("a", {16}, x);
    w.tensor_f32("b", {8}, x);
    std::string bytes = w.build();
    const std::string needle = std::string("\x01\0\0\0\0\0\0\0b", 9);
    const size_t at = bytes.find(needle);
    ASSERT_NE(at, std::string::npos);
    // b's offset field sits after name, n_dims (4), ne (8), type (4).
    const size_t offset_pos = at + needle.size() + 4 + 8 + 4;
    uint64_t new_offset = 32;
    std::memcpy(&bytes[offset_pos], &new_offset, 8);
    expect_bad(bytes, {"tensor 'b'", "overlap tensor 'a'"});
    new_offset = 36;
    std::memcpy(&bytes[offset_pos], &new_offset, 8);
    expect_bad(bytes, {"tensor 'b'", "offset 36 is not a multiple of the alignment 32"});
    new_offset = 1ull << 62;
    std::memcpy(&bytes[offset_pos], &new_offset, 8);
    expect_bad(bytes, {"tensor 'b'", "run past the end of the data section"});
  }
}

TEST(GgufBadFiles, EveryTruncationFailsCleanly) {
  TempDir dir;
  const ModelConfig c = small_config(true);
  write_llama_gguf(dir.path + "/m.gguf", c, test::random_vector(ModelLayout(c).total, 9));
  std::ifstream in(dir.path + "/m.gguf", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Every prefix that cuts into the header or the tensors must throw; stepping through all of
  // them would take long, so take every byte of the first 4 KiB and then a stride.
  for (size_t n = 0; n + 1 < bytes.size(); n += n < 4096 ? 1 : 997) {
    const std::string cut = bytes.substr(0, n);
    EXPECT_THROW(open_bytes(cut), Error) << "prefix of " << n << " bytes";
  }
}

// gguf_bpe_vocab takes the special ids and token types as GGUF stores them (32- or 64-bit); one
// that does not fit the vocabulary is refused naming the key, never narrowed to an id that does
// (2^32 + 1 would otherwise become the valid id 1).
TEST(GgufTokenizer, SpecialIdsAndTypesAreNotNarrowed) {
  auto vocab_gguf = [](const std::function<void(GgufWriter&)>& edit) {
    GgufWriter w;
    std::vector<std::string> tokens;
    for (int b = 0x21; b < 0x7f; b++) tokens.push_back(std::string(1, (char)b));
    tokens.push_back("\xc4\xa0");  // "Ġ", the space symbol
    w.strings("tokenizer.ggml.tokens", tokens);
    w.string("tokenizer.ggml.model", "gpt2");
    w.string("tokenizer.ggml.pre", "gpt2");
    edit(w);
    return w.build();
  };
  const std::string good = vocab_gguf([](GgufWriter& w) { w.u32("tokenizer.ggml.bos_token_id", 1); });
  EXPECT_EQ(Tokenizer(gguf_bpe_vocab(open_bytes(good))).vocab().bos, 1);
  const std::string wide_bos = vocab_gguf([](GgufWriter& w) {
    w.scalar<uint64_t>("tokenizer.ggml.bos_token_id", GgufValueType::UINT64, (1ull << 32) + 1);
  });
  expect_error([&] { gguf_bpe_vocab(open_bytes(wide_bos)); },
               {"mem.gguf", "tokenizer.ggml.bos_token_id is 4294967297, outside the vocabulary of 95 tokens"});
  const std::string big_pad = vocab_gguf([](GgufWriter& w) { w.u32("tokenizer.ggml.padding_token_id", 95); });
  expect_error([&] { gguf_bpe_vocab(open_bytes(big_pad)); }, {"tokenizer.ggml.padding_token_id is 95"});
  const std::string wide_type = vocab_gguf([](GgufWriter& w) {
    w.key("tokenizer.ggml.token_type", GgufValueType::ARRAY);
    put<uint32_t>(w.kvs, (uint32_t)GgufValueType::INT64);
    put<uint64_t>(w.kvs, 95);
    for (int i = 0; i < 95; i++) put<int64_t>(w.kvs, i == 7 ? (1ll << 32) + 3 : 1);
  });
  expect_error([&] { gguf_bpe_vocab(open_bytes(wide_type)); },
               {"tokenizer.ggml.token_type[7] is 4294967299, not a token type"});
}

// Inputs on which the fuzz target once crashed (tests/data/fuzz_regressions): its work must end in
// an owlore::Error or a clean return. test_checkpoint's FuzzRegressions.LoadModelFails loads each
// through load_model and expects an owlore::Error.
TEST(GgufBadFiles, FuzzRegressionsReplayCleanly) {
  const fs::path dir = fs::path(OWLORE_SOURCE_DIR) / "tests/data/fuzz_regressions";
  int replayed = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("gguf-", 0) != 0) continue;
    replayed++;
    EXPECT_NO_THROW({
      try {
        const GgufFile file(entry.path().string());
        try {
          file.config();
        } catch (const Error&) {
        }
        for (const GgufTensor& t : file.tensors()) {
          try {
            file.dequantize(t);
          } catch (const Error&) {
          }
        }
      } catch (const Error&) {
      }
    }) << entry.path();
  }
  EXPECT_GT(replayed, 0);
}

}  // namespace
}  // namespace owlore
