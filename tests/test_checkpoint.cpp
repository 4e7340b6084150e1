// Checkpoints: HF config.json parsing and writing, save_hf_checkpoint -> load_model round trips
// (f32 exact, bf16 rounded to nearest even), sharded checkpoints, atomic saves, named errors for
// missing / misshapen tensors, the fuzz regressions through load_model, and the real SmolLM2 GGUF
// (skipped when tools/fetch_smollm2.sh has not been run).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/model_info.h"
#include "io/safetensors.h"
#include "model/layout.h"
#include "test_util.h"

namespace owlore {
namespace {
namespace fs = std::filesystem;

using test::expect_error;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("ckpt") {}
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// ---- config.json ------------------------------------------------------------------------------

TEST(HfConfig, LlamaDefaults) {
  // TinyLlama-style config without head_dim / num_key_value_heads / rope_theta.
  const ModelConfig c = parse_hf_config(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "vocab_size": 32000,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "rope_scaling": null, "torch_dtype": "bfloat16"})",
                                        "/models/tinyllama/config.json");
  EXPECT_EQ(c.name, "tinyllama");
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.ffn, 5632);
  EXPECT_EQ(c.n_layers, 22);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 32);  // default = heads
  EXPECT_EQ(c.head_dim, 64);    // default = hidden / heads
  EXPECT_EQ(c.vocab, 32000);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.max_seq, 2048);
  EXPECT_EQ(c.bos_token, 1);
  EXPECT_EQ(c.eos_token, 2);
}

TEST(HfConfig, MistralAndLlama3Fields) {
  const ModelConfig m = parse_hf_config(R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 32000, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05, "sliding_window": null,
    "max_position_embeddings": 32768, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2})",
                                        "m/config.json");
  EXPECT_EQ(m.n_kv_heads, 8);
  EXPECT_EQ(m.head_dim, 128);
  EXPECT_EQ(m.rope_theta, 1e6f);
  EXPECT_EQ(m.max_seq, 32768);
  const ModelConfig l3 = parse_hf_config(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 300,
    "rope_theta": 500000.0, "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128009]})",
                                         "config.json");
  EXPECT_EQ(l3.eos_token, 128001);
  EXPECT_TRUE(l3.tied_embeddings);
  EXPECT_EQ(l3.norm_eps, 1e-6f);  // LlamaConfig default
  // transformers 5 moves rope_theta into rope_parameters (config written by transformers 5.17).
  const ModelConfig v5 = parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
    "bos_token_id": 1, "dtype": "bfloat16", "eos_token_id": 2, "head_dim": 16, "hidden_act": "silu",
    "hidden_size": 48, "intermediate_size": 80, "max_position_embeddings": 2048, "mlp_bias": false,
    "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "pad_token_id": null, "rms_norm_eps": 1e-06, "rope_parameters": {"rope_theta": 50000.0, "rope_type": "default"},
    "tie_word_embeddings": true, "transformers_version": "5.17.0", "use_cache": true, "vocab_size": 300})",
                                         "v5/config.json");
  EXPECT_EQ(v5.rope_theta, 50000.0f);
  EXPECT_EQ(v5.head_dim, 16);
  EXPECT_TRUE(v5.tied_embeddings);
}

TEST(HfConfig, ErrorsNameFileAndKey) {
  expect_error([] { parse_hf_config("[1]", "a/config.json"); }, {"a/config.json", "expected an object"});
  expect_error([] { parse_hf_config("{", "a/config.json"); }, {"a/config.json", "not valid JSON"});
  expect_error([] { parse_hf_config(R"({"model_type": "llama"})", "a/config.json"); },
               {"a/config.json", "missing required key 'hidden_size'"});
  expect_error([] { parse_hf_config(R"({"model_type": "qwen2", "hidden_size": 8})", "a/config.json"); },
               {"model_type 'qwen2' is not supported"});
  expect_error([] {
    parse_hf_config(R"({"hidden_size": "64", "intermediate_size": 96, "num_hidden_layers": 1,
      "num_attention_heads": 4, "vocab_size": 300})", "a/config.json");
  }, {"key 'hidden_size' is \"64\", expected an integer"});
  expect_error([] {
    parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
      "num_attention_heads": 4, "vocab_size": 300, "rope_scaling": {"type": "linear", "factor": 2.0}})",
                    "a/config.json");
  }, {"a/config.json: rope_scaling", "not supported", "\"default\"", "\"llama3\""});
  expect_error([] {
    parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
      "vocab_size": 300, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}})", "a/config.json");
  }, {"a/config.json", "rope_parameters", "not supported"});
  expect_error([] {
    parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
      "num_attention_heads": 4, "head_dim": 7, "vocab_size": 300})", "a/config.json");
  }, {"a/config.json", "head_dim must be even"});
}

// Llama-3.1-8B's config.json (transformers 4.43), and Llama-3.2-1B's, as the hub has them.
const char* kLlama31Config = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
  "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0,
  "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";
const char* kLlama32Config = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
  "use_cache": true, "vocab_size": 128256})";

void expect_same_shape(const ModelConfig& got, const ModelConfig& want) {
  EXPECT_EQ(got.n_layers, want.n_layers);
  EXPECT_EQ(got.d_model, want.d_model);
  EXPECT_EQ(got.n_heads, want.n_heads);
  EXPECT_EQ(got.n_kv_heads, want.n_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.ffn, want.ffn);
  EXPECT_EQ(got.vocab, want.vocab);
  EXPECT_EQ(got.max_seq, want.max_seq);
  EXPECT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.norm_eps, want.norm_eps);
  EXPECT_EQ(got.tied_embeddings, want.tied_embeddings);
  EXPECT_EQ(got.rope_scaling.type, want.rope_scaling.type);
  EXPECT_EQ(got.rope_scaling.factor, want.rope_scaling.factor);
  EXPECT_EQ(got.rope_scaling.low_freq_factor, want.rope_scaling.low_freq_factor);
  EXPECT_EQ(got.rope_scaling.high_freq_factor, want.rope_scaling.high_freq_factor);
  EXPECT_EQ(got.rope_scaling.original_max_pos, want.rope_scaling.original_max_pos);
  EXPECT_EQ(got.sliding_window, want.sliding_window);
}

TEST(HfConfig, Llama3RopeScalingMatchesPresets) {
  const ModelConfig l31 = parse_hf_config(kLlama31Config, "Llama-3.1-8B/config.json");
  EXPECT_EQ(l31.rope_scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(l31.rope_scaling.factor, 8.0f);
  EXPECT_EQ(l31.rope_scaling.original_max_pos, 8192);
  expect_same_shape(l31, preset_config("llama3.1-8b"));
  const ModelConfig l32 = parse_hf_config(kLlama32Config, "Llama-3.2-1B/config.json");
  EXPECT_EQ(l32.rope_scaling.factor, 32.0f);
  EXPECT_EQ(l32.eos_token, 128001);
  expect_same_shape(l32, preset_config("llama3.2-1b"));
  // The 3B differs from the 1B in its shape only.
  std::string text = kLlama32Config;
  for (auto [from, to] : {std::pair{"\"head_dim\": 64", "\"head_dim\": 128"},
                          std::pair{"\"hidden_size\": 2048", "\"hidden_size\": 3072"},
                          std::pair{"\"num_attention_heads\": 32", "\"num_attention_heads\": 24"},
                          std::pair{"\"num_hidden_layers\": 16", "\"num_hidden_layers\": 28"}})
    text.replace(text.find(from), std::string(from).size(), to);
  expect_same_shape(parse_hf_config(text, "Llama-3.2-3B/config.json"), preset_config("llama3.2-3b"));
  // Without rope_scaling (LLaMA-3-8B): plain RoPE.
  const ModelConfig l3 = parse_hf_config(R"({"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 8192, "rope_scaling": null})", "Llama-3-8B/config.json");
  EXPECT_EQ(l3.rope_scaling.type, RopeScalingType::none);
  expect_same_shape(l3, preset_config("llama3-8b"));
  // transformers 5 spelling: rope_parameters carries the type, theta and scaling keys.
  const ModelConfig v5 = parse_hf_config(R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
    "num_attention_heads": 4, "vocab_size": 300, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
    "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})",
                                         "v5/config.json");
  EXPECT_EQ(v5.rope_theta, 5e5f);
  EXPECT_EQ(v5.rope_scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(v5.rope_scaling.factor, 8.0f);
  EXPECT_EQ(v5.rope_scaling.high_freq_factor, 4.0f);
}

TEST(HfConfig, Llama3RopeScalingErrorsNameKey) {
  const std::string base = R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
    "num_attention_heads": 4, "vocab_size": 300, "rope_scaling": {"rope_type": "llama3", )";
  const std::string full = R"("factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, )"
                           R"("original_max_position_embeddings": 8192)";
  EXPECT_EQ(parse_hf_config(base + full + "}}", "a/config.json").rope_scaling.type, RopeScalingType::llama3);
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
    std::string text = full;
    const size_t at = text.find(std::string("\"") + key + "\"");
    const size_t end = text.find(',', at);
    text.erase(at, end == std::string::npos ? std::string::npos : end + 2 - at);
    if (text.size() >= 2 && text.substr(text.size() - 2) == ", ") text.resize(text.size() - 2);
    expect_error([&] { parse_hf_config(base + text + "}}", "a/config.json"); },
                 {"a/config.json: rope_scaling", std::string("missing required key '") + key + "'"});
  }
  expect_error([&] {
    parse_hf_config(base + R"("factor": -8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}})", "a/config.json");
  }, {"a/config.json: rope_scaling", "key 'factor' = -8"});
  expect_error([&] {
    parse_hf_config(base + R"("factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}})", "a/config.json");
  }, {"a/config.json: rope_scaling", "high_freq_factor 4 must be greater than low_freq_factor 4"});
  expect_error([&] {
    parse_hf_config(base + R"("factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": "8192"}})", "a/config.json");
  }, {"a/config.json: rope_scaling", "key 'original_max_position_embeddings'", "expected an integer"});
  expect_error([&] {
    parse_hf_config(base + R"("factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 0}})", "a/config.json");
  }, {"a/config.json: rope_scaling", "original_max_position_embeddings' = 0"});
}

TEST(HfConfig, MistralSlidingWindow) {
  // Mistral-7B v0.1: a 4096-token window; v0.2/v0.3: null.
  const std::string base = R"({"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    "max_position_embeddings": 32768, )";
  const ModelConfig v01 = parse_hf_config(base + R"("sliding_window": 4096})", "mistral-v0.1/config.json");
  EXPECT_EQ(v01.sliding_window, 4096);
  EXPECT_EQ(parse_hf_config(base + R"("sliding_window": null})", "m/config.json").sliding_window, 0);
  EXPECT_EQ(parse_hf_config(base + R"("rope_theta": 1e6})", "m/config.json").sliding_window, 0);
  require_seq_fits(v01, 4096);
  expect_error([&] { require_seq_fits(v01, 4097); }, {"--seq 4097", "config.json sliding_window 4096"});
  ModelConfig none = v01;
  none.sliding_window = 0;
  require_seq_fits(none, 32768);
  expect_error([&] { require_seq_fits(none, 32769); }, {"--seq 32769", "context of 32768"});
  expect_error([&] { parse_hf_config(base + R"("sliding_window": -1})", "m/config.json"); },
               {"m/config.json", "sliding_window", "-1"});
  expect_error([&] { parse_hf_config(base + R"("sliding_window": "4096"})", "m/config.json"); },
               {"m/config.json", "sliding_window", "expected an integer"});
  // Written back as Mistral (LlamaForCausalLM would attend past the window).
  const nlohmann::json j = nlohmann::json::parse(hf_config_json(v01, "bfloat16"));
  EXPECT_EQ(j["model_type"], "mistral");
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"MistralForCausalLM"}));
  EXPECT_EQ(j["sliding_window"], 4096);
  expect_same_shape(parse_hf_config(j.dump(), "x/config.json"), v01);
}

TEST(HfConfig, RopeThetaAndNormEpsMustBeFiniteAndPositive) {
  const std::string base = R"({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
    "num_attention_heads": 4, "vocab_size": 300, )";
  for (const char* key : {"rope_theta", "rms_norm_eps"})
    for (const char* value : {"0", "-1", "-1e-06", "1e+39", "1e-50"})  // as the JSON library prints them
      expect_error([&] { parse_hf_config(base + "\"" + key + "\": " + value + "}", "a/config.json"); },
                   {"a/config.json", std::string("key '") + key + "' = " + value, "expected a finite 32-bit float > 0"});
  expect_error([&] {
    parse_hf_config(base + R"("rope_parameters": {"rope_type": "default", "rope_theta": -5}})", "a/config.json");
  }, {"a/config.json: rope_parameters", "key 'rope_theta' = -5"});
  EXPECT_EQ(parse_hf_config(base + R"("rope_theta": 5e5, "rms_norm_eps": 1e-6})", "a/config.json").rope_theta, 5e5f);
}

TEST(HfConfig, WrittenConfigLoadsAsLlama) {
  for (const char* preset : {"smollm2-135m", "tiny", "llama3-8b", "llama3.1-8b", "llama3.2-1b"}) {
    ModelConfig c = preset_config(preset);
    c.bos_token = 1;
    const std::string text = hf_config_json(c, "bfloat16");
    const nlohmann::json j = nlohmann::json::parse(text);
    EXPECT_EQ(j["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
    EXPECT_EQ(j["model_type"], "llama");
    EXPECT_EQ(j["torch_dtype"], "bfloat16");
    EXPECT_EQ(j["hidden_act"], "silu");
    EXPECT_TRUE(j["eos_token_id"].is_null());
    EXPECT_EQ(j["dtype"], "bfloat16");
    const bool scaled = c.rope_scaling.type == RopeScalingType::llama3;
    EXPECT_EQ(j["rope_parameters"]["rope_type"], scaled ? "llama3" : "default");
    EXPECT_EQ(j["rope_parameters"]["rope_theta"], j["rope_theta"]);
    EXPECT_EQ(j.contains("rope_scaling"), scaled);
    if (scaled) {
      EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
      EXPECT_EQ(j["rope_scaling"]["factor"], c.rope_scaling.factor);
      EXPECT_EQ(j["rope_scaling"]["original_max_position_embeddings"], 8192);
      EXPECT_EQ(j["rope_parameters"]["factor"], c.rope_scaling.factor);
    }
    expect_same_shape(parse_hf_config(text, "x/config.json"), c);
    EXPECT_NE(text.find("\"rms_norm_eps\": 1e-05"), std::string::npos) << text;  // shortest float text
    const ModelConfig back = parse_hf_config(text, "x/config.json");
    EXPECT_EQ(back.n_layers, c.n_layers);
    EXPECT_EQ(back.d_model, c.d_model);
    EXPECT_EQ(back.n_heads, c.n_heads);
    EXPECT_EQ(back.n_kv_heads, c.n_kv_heads);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.ffn, c.ffn);
    EXPECT_EQ(back.vocab, c.vocab);
    EXPECT_EQ(back.max_seq, c.max_seq);
    EXPECT_EQ(back.rope_theta, c.rope_theta);
    EXPECT_EQ(back.norm_eps, c.norm_eps);
    EXPECT_EQ(back.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(back.bos_token, 1);
    EXPECT_EQ(back.eos_token, -1);
  }
}

// ---- save / load ------------------------------------------------------------------------------

TEST(Checkpoint, SaveLoadRoundTripF32AndBf16) {
  for (const char* preset : {"tiny", "tiny-tied", "tiny-mha"}) {
    const ModelConfig c = preset_config(preset);
    const ModelLayout layout(c);
    const std::vector<float> w = test::random_vector(layout.total, 21);
    TempDir dir;
    save_hf_checkpoint(dir.path + "/ck", layout, w.data(), SaveDtype::f32);
    LoadedModel m = load_model(dir.path + "/ck");
    EXPECT_EQ(m.weights, w) << preset;
    EXPECT_EQ(m.config.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(m.config.head_dim, c.head_dim);
    EXPECT_EQ(m.source, dir.path + "/ck/model.safetensors");

    save_hf_checkpoint(dir.path + "/ck", layout, w.data(), SaveDtype::bf16);  // overwrites in place
    m = load_model(dir.path + "/ck/model.safetensors");
    ASSERT_EQ(m.weights.size(), w.size());
    for (size_t i = 0; i < w.size(); i++) ASSERT_EQ(m.weights[i], bf16_to_float(float_to_bf16(w[i]))) << i;
    const nlohmann::json j = nlohmann::json::parse(read_file(dir.path + "/ck/config.json"));
    EXPECT_EQ(j["torch_dtype"], "bfloat16");
    // Norms are 1-D as in transformers; the tied head is not written.
    const SafetensorsFile st(dir.path + "/ck/model.safetensors");
    EXPECT_EQ(st.get("model.norm.weight").shape, (std::vector<int64_t>{c.d_model}));
    EXPECT_EQ(st.get("model.layers.0.self_attn.k_proj.weight").shape,
              (std::vector<int64_t>{c.kv_dim(), c.d_model}));
    EXPECT_EQ(st.find("lm_head.weight") != nullptr, !c.tied_embeddings);
    EXPECT_EQ(st.metadata().at("format"), "pt");
    for (const auto& e : fs::directory_iterator(dir.path + "/ck"))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left over: " << e.path();
  }
}

TEST(Checkpoint, CrashMidSaveLeavesPreviousFiles) {
  const ModelConfig c = preset_config("tiny");
  const ModelLayout layout(c);
  const std::vector<float> old_w = test::random_vector(layout.total, 1), new_w = test::random_vector(layout.total, 2);
  TempDir dir;
  save_hf_checkpoint(dir.path, layout, old_w.data(), SaveDtype::f32);
  const std::string old_config = read_file(dir.path + "/config.json");
  // Make the save fail after the weights are fully written (the config's temporary file cannot
  // be created), as a crash there would.
  fs::create_directory(dir.path + "/config.json.tmp." + std::to_string(getpid()));
  EXPECT_THROW(save_hf_checkpoint(dir.path, layout, new_w.data(), SaveDtype::bf16), Error);
  fs::remove(dir.path + "/config.json.tmp." + std::to_string(getpid()));
  EXPECT_EQ(load_model(dir.path).weights, old_w);
  EXPECT_EQ(read_file(dir.path + "/config.json"), old_config);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    files++;
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left over: " << e.path();
  }
  EXPECT_EQ(files, 2);
}

// Writes `config`'s tensors (from w) as a Hugging Face checkpoint, with hooks to damage it.
struct HfWriter {
  HfWriter(const ModelConfig& c, std::vector<float> weights) : config(c), w(std::move(weights)) {}
  ModelConfig config;
  std::vector<float> w;
  std::string skip, wrong_shape, extra;
  StDtype dtype = StDtype::F32;

  std::vector<StWriteTensor> tensors() const {
    const ModelLayout layout(config);
    std::vector<StWriteTensor> out;
    for (const TensorSlot& s : layout.tensors) {
      if (s.name == skip) continue;
      std::vector<int64_t> shape = s.rows == 1 ? std::vector<int64_t>{s.cols} : std::vector<int64_t>{s.rows, s.cols};
      if (s.name == wrong_shape) shape = {s.cols, s.rows};
      out.push_back({s.name, shape, w.data() + s.offset});
    }
    if (!extra.empty()) out.push_back({extra, {2}, w.data()});
    return out;
  }
  void save(const std::string& dir) const {
    fs::create_directories(dir);
    write_safetensors(dir + "/model.safetensors", tensors(), dtype);
    write_hf_config(dir + "/config.json", config, "float32");
  }
};

TEST(Checkpoint, MissingMisshapenAndExtraTensors) {
  const ModelConfig c = preset_config("tiny");
  HfWriter h{c, test::random_vector(ModelLayout(c).total, 3)};
  TempDir dir;
  h.extra = "model.layers.0.self_attn.rotary_emb.inv_freq";
  h.save(dir.path + "/ok");
  EXPECT_EQ(load_model(dir.path + "/ok").weights, h.w);  // extra tensor ignored

  h.extra.clear();
  h.skip = "model.layers.2.mlp.down_proj.weight";
  h.save(dir.path + "/missing");
  expect_error([&] { load_model(dir.path + "/missing"); },
               {dir.path + "/missing/model.safetensors", "tensor 'model.layers.2.mlp.down_proj.weight' not found",
                "expected shape [45, 71]"});

  h.skip.clear();
  h.wrong_shape = "model.layers.1.self_attn.k_proj.weight";
  h.save(dir.path + "/shape");
  expect_error([&] { load_model(dir.path + "/shape"); },
               {dir.path + "/shape/model.safetensors", "tensor 'model.layers.1.self_attn.k_proj.weight'",
                "has shape [45, 30], expected [30, 45]"});

  // Untied model without lm_head: error; tied model without lm_head: fine.
  h.wrong_shape.clear();
  h.skip = "lm_head.weight";
  h.save(dir.path + "/nohead");
  expect_error([&] { load_model(dir.path + "/nohead"); }, {"tensor 'lm_head.weight' not found"});
}

TEST(Checkpoint, TensorsTheConfigDoesNotUseAreErrors) {
  TempDir dir;
  const ModelConfig c = preset_config("tiny");  // 3 layers
  HfWriter h{c, test::random_vector(ModelLayout(c).total, 12)};
  // num_hidden_layers 1 on a 3-layer file would drop two layers silently.
  h.save(dir.path + "/fewer");
  ModelConfig one = c;
  one.n_layers = 1;
  write_hf_config(dir.path + "/fewer/config.json", one, "float32");
  expect_error([&] { load_model(dir.path + "/fewer"); },
               {dir.path + "/fewer/model.safetensors", "18 tensors that", "does not use",
                "'model.layers.1.input_layernorm.weight'", "and 12 more",
                "num_hidden_layers is 1, but the file holds layers up to 2"});
  // Any other tensor the layout lacks.
  h.extra = "model.layers.0.self_attn.q_norm.weight";
  h.save(dir.path + "/extra");
  expect_error([&] { load_model(dir.path + "/extra"); },
               {"1 tensor that", "'model.layers.0.self_attn.q_norm.weight'", "does not describe these weights"});

  // Tied embeddings with an lm_head: refused unless it is bit-identical to the embedding.
  const ModelConfig tc = preset_config("tiny-tied");
  const ModelLayout tl(tc);
  const std::vector<float> tw = test::random_vector(tl.total, 4);
  const TensorSlot& embedding = *tl.find("model.embed_tokens.weight");
  std::vector<StWriteTensor> tensors;
  for (const TensorSlot& s : tl.tensors)
    tensors.push_back({s.name, s.rows == 1 ? std::vector<int64_t>{s.cols} : std::vector<int64_t>{s.rows, s.cols},
                       tw.data() + s.offset});
  std::vector<float> head(tw.begin() + embedding.offset, tw.begin() + embedding.offset + embedding.numel());
  tensors.push_back({"lm_head.weight", {embedding.rows, embedding.cols}, head.data()});
  fs::create_directories(dir.path + "/tied");
  write_hf_config(dir.path + "/tied/config.json", tc, "float32");
  write_safetensors(dir.path + "/tied/model.safetensors", tensors, StDtype::F32);
  EXPECT_EQ(load_model(dir.path + "/tied").weights, tw);  // an exact copy carries nothing the tie drops
  head[17] += 1.0f;
  write_safetensors(dir.path + "/tied/model.safetensors", tensors, StDtype::F32);
  expect_error([&] { load_model(dir.path + "/tied"); },
               {dir.path + "/tied/model.safetensors", "tensor 'lm_head.weight'", "differs from 'model.embed_tokens.weight'",
                "tie_word_embeddings true"});
}

TEST(Checkpoint, NonFiniteWeightsAreNamed) {
  const ModelConfig c = preset_config("tiny");
  const ModelLayout layout(c);
  std::vector<float> w = test::random_vector(layout.total, 13);
  const TensorSlot& up = *layout.find("model.layers.1.mlp.up_proj.weight");
  w[up.offset + 5] = std::nanf("");
  w[up.offset + 9] = INFINITY;
  w[up.offset + 10] = -INFINITY;
  TempDir dir;
  for (const SaveDtype dtype : {SaveDtype::f32, SaveDtype::bf16}) {
    save_hf_checkpoint(dir.path, layout, w.data(), dtype);
    expect_error([&] { load_model(dir.path); },
                 {dir.path + "/model.safetensors", "tensor 'model.layers.1.mlp.up_proj.weight'",
                  "holds 3 non-finite values (NaN or Inf) among 3195", "first at element 5"});
  }
}

TEST(Checkpoint, F16AndBf16SourcesConvert) {
  const ModelConfig c = preset_config("tiny-tied");
  HfWriter h{c, test::random_vector(ModelLayout(c).total, 5)};
  TempDir dir;
  h.dtype = StDtype::F16;
  h.save(dir.path);
  const LoadedModel m = load_model(dir.path);
  for (size_t i = 0; i < h.w.size(); i++) ASSERT_EQ(m.weights[i], f16_to_float(float_to_f16(h.w[i])));
}

TEST(Checkpoint, ShardedCheckpoint) {
  const ModelConfig c = preset_config("tiny");
  HfWriter h{c, test::random_vector(ModelLayout(c).total, 6)};
  const std::vector<StWriteTensor> all = h.tensors();
  TempDir dir;
  write_hf_config(dir.path + "/config.json", c, "bfloat16");
  const size_t half = all.size() / 2;
  const std::vector<StWriteTensor> a(all.begin(), all.begin() + half), b(all.begin() + half, all.end());
  write_safetensors(dir.path + "/model-00001-of-00002.safetensors", a, StDtype::BF16);
  write_safetensors(dir.path + "/model-00002-of-00002.safetensors", b, StDtype::F32);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (size_t i = 0; i < all.size(); i++)
    index["weight_map"][all[i].name] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  write_file(dir.path + "/model.safetensors.index.json", index.dump());
  const LoadedModel m = load_model(dir.path);
  EXPECT_EQ(m.source, dir.path + "/model.safetensors.index.json");
  const ModelLayout layout(c);
  for (size_t i = 0; i < all.size(); i++) {
    const TensorSlot* s = layout.find(all[i].name);
    for (int64_t k = 0; k < s->numel(); k++) {
      const float want = i < half ? bf16_to_float(float_to_bf16(h.w[s->offset + k])) : h.w[s->offset + k];
      ASSERT_EQ(m.weights[s->offset + k], want) << all[i].name << "[" << k << "]";
    }
  }
  EXPECT_EQ(load_model(dir.path + "/model.safetensors.index.json").weights, m.weights);

  // The index lists a tensor its shard does not hold.
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  write_file(dir.path + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_model(dir.path); },
               {dir.path + "/model-00001-of-00002.safetensors", "tensor 'model.norm.weight' is listed in",
                "not in this shard"});
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  write_file(dir.path + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_model(dir.path); }, {"model.safetensors.index.json", "'../elsewhere.safetensors'"});
  write_file(dir.path + "/model.safetensors.index.json", "[]");
  expect_error([&] { load_model(dir.path); }, {"model.safetensors.index.json", "expected an object"});
}

TEST(Checkpoint, PathErrors) {
  TempDir dir;
  expect_error([&] { load_model(dir.path + "/nope"); }, {dir.path + "/nope", "no such file or directory"});
  expect_error([&] { load_model(dir.path); }, {dir.path, "neither model.safetensors nor"});
  write_file(dir.path + "/model.safetensors", "");
  expect_error([&] { load_model(dir.path); }, {dir.path, "no config.json"});
  write_file(dir.path + "/weights.bin", "hello");
  expect_error([&] { load_model(dir.path + "/weights.bin"); }, {"unknown model format"});
  write_file(dir.path + "/config.json", "{}");
  expect_error([&] { load_model(dir.path); }, {dir.path + "/model.safetensors", "shorter than the 8-byte header"});
}

TEST(Checkpoint, ModelInfoOnHfCheckpoint) {
  const ModelConfig c = preset_config("tiny");
  const ModelLayout layout(c);
  const std::vector<float> w = test::random_vector(layout.total, 7);
  TempDir dir;
  save_hf_checkpoint(dir.path, layout, w.data(), SaveDtype::bf16);
  std::ostringstream out;
  print_model_info(dir.path, out);
  const std::string s = out.str();
  EXPECT_NE(s.find("format: safetensors"), std::string::npos) << s;
  EXPECT_NE(s.find("parameters (config): " + std::to_string(c.total_params())), std::string::npos) << s;
  EXPECT_NE(s.find("parameters (file):   " + std::to_string(c.total_params())), std::string::npos) << s;
  EXPECT_NE(s.find("BF16: " + std::to_string(layout.tensors.size()) + " tensors"), std::string::npos) << s;
  EXPECT_NE(s.find("tokenizer: none"), std::string::npos) << s;
}

// ---- fuzz regressions through load_model -------------------------------------------------------

TEST(FuzzRegressions, LoadModelFails) {
  const fs::path src = fs::path(OWLORE_SOURCE_DIR) / "tests/data/fuzz_regressions";
  TempDir dir;
  // A valid config beside the safetensors inputs, so the failure comes from the weights file.
  write_hf_config(dir.path + "/config.json", preset_config("tiny"), "float32");
  int loaded = 0;
  for (const auto& entry : fs::directory_iterator(src)) {
    const std::string name = entry.path().filename().string();
    std::string copy;
    if (name.rfind("gguf-", 0) == 0) copy = dir.path + "/" + name + ".gguf";
    else if (name.rfind("safetensors-", 0) == 0) copy = dir.path + "/" + name + ".safetensors";
    else continue;  // hf_config-* inputs are replayed below
    fs::copy_file(entry.path(), copy, fs::copy_options::overwrite_existing);
    EXPECT_THROW(load_model(copy), Error) << name;
    loaded++;
  }
  for (const auto& entry : fs::directory_iterator(src)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("hf_config-", 0) != 0) continue;
    EXPECT_THROW(read_hf_config(entry.path().string()), Error) << name;
    loaded++;
  }
  EXPECT_GT(loaded, 0);
}

// ---- the real SmolLM2-135M GGUF (DESIGN.md §5) --------------------------------------------------

double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); i++) ma += a[i] / a.size(), mb += b[i] / b.size();
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); i++) {
    ab += (a[i] - ma) * (b[i] - mb);
    aa += (a[i] - ma) * (a[i] - ma);
    bb += (b[i] - mb) * (b[i] - mb);
  }
  return ab / std::sqrt(aa * bb);
}

// In rotate-half order rows i and i + head_dim/2 of a head share one RoPE frequency, and trained
// weights show it: their row norms correlate across i. Mean over all heads of all layers.
double rope_pair_correlation(const std::vector<float>& weights, const ModelLayout& layout, const char* proj,
                             bool reinterleave) {
  const ModelConfig& c = layout.config;
  const int heads = std::string(proj) == "q_proj" ? c.n_heads : c.n_kv_heads, hd = c.head_dim;
  double total = 0;
  int count = 0;
  for (int l = 0; l < c.n_layers; l++) {
    const TensorSlot* s = layout.find("model.layers." + std::to_string(l) + ".self_attn." + proj + ".weight");
    std::vector<float> w(weights.begin() + s->offset, weights.begin() + s->offset + s->numel());
    if (reinterleave) permute_rows_for_interleaved_rope(w.data(), s->rows, s->cols, heads);
    for (int h = 0; h < heads; h++) {
      std::vector<double> first, second;
      for (int half = 0; half < 2; half++)
        for (int i = 0; i < hd / 2; i++) {
          double sum_sq = 0;
          const float* row = w.data() + (int64_t)(h * hd + half * hd / 2 + i) * s->cols;
          for (int64_t k = 0; k < s->cols; k++) sum_sq += (double)row[k] * row[k];
          (half ? second : first).push_back(std::sqrt(sum_sq));
        }
      total += correlation(first, second);
      count++;
    }
  }
  return total / count;
}

std::string smollm2_path() {
  const char* cache = std::getenv("OWLORE_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir = cache ? cache : std::string(home ? home : "") + "/.cache/owlore";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(SmolLM2, LoadsRealGguf) {
  const std::string path = smollm2_path();
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent; run tools/fetch_smollm2.sh to fetch it";
  const LoadedModel m = load_model(path);
  const ModelConfig& c = m.config;
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.d_model, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.ffn, 1536);
  EXPECT_EQ(c.vocab, 49152);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  const ModelLayout layout(c);
  ASSERT_EQ((int64_t)m.weights.size(), layout.total);
  EXPECT_EQ(layout.total, preset_config("smollm2-135m").total_params());
  for (const TensorSlot& s : layout.tensors) {
    double sum_sq = 0.0;
    for (int64_t i = 0; i < s.numel(); i++) {
      const float x = m.weights[s.offset + i];
      ASSERT_TRUE(std::isfinite(x)) << s.name << "[" << i << "]";
      sum_sq += (double)x * x;
    }
    const double rms = std::sqrt(sum_sq / (double)s.numel());
    // Trained LLaMA weights: matrices have rms around 0.02-0.2, norm gains around 0.1-10.
    if (s.is_matrix()) {
      EXPECT_GT(rms, 1e-3) << s.name;
      EXPECT_LT(rms, 1.0) << s.name;
    } else {
      EXPECT_GT(rms, 1e-2) << s.name;
      EXPECT_LT(rms, 50.0) << s.name;
    }
  }
  // The un-permuted wq/wk are in rotate-half order (measured: q 0.46, k 0.34); the GGUF's own
  // interleaved order shows no such pairing (q 0.001).
  const double q_pairs = rope_pair_correlation(m.weights, layout, "q_proj", false);
  const double k_pairs = rope_pair_correlation(m.weights, layout, "k_proj", false);
  const double q_interleaved = rope_pair_correlation(m.weights, layout, "q_proj", true);
  EXPECT_GT(q_pairs, 0.3);
  EXPECT_GT(k_pairs, 0.25);
  EXPECT_LT(q_interleaved, 0.1);

  const GgufFile file(path);
  EXPECT_EQ(file.tokens().size(), 49152u);
  EXPECT_GT(file.merges().size(), 40000u);
  EXPECT_EQ(file.token_types().size(), 49152u);
  EXPECT_EQ(file.tokenizer_model(), "gpt2");
  std::cout << "tokenizer.ggml.pre = '" << file.tokenizer_pre() << "', bos " << file.bos_id() << ", eos "
            << file.eos_id() << ", pad " << file.padding_id() << "\n";
}

}  // namespace
}  // namespace owlore
