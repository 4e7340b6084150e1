// Loading a model into the fp32 weight arena of ModelLayout, from a Hugging Face checkpoint
// (config.json + safetensors, single or sharded) or a GGUF file, and saving a Hugging Face
// checkpoint that transformers' LlamaForCausalLM loads.
#pragma once
#include <string>
#include <vector>

#include "base/choices.h"
#include "base/state_bundle.h"
#include "io/tokenizer_export.h"
#include "model/config.h"
#include "model/layout.h"

namespace owlore {

struct LoadedModel {
  ModelConfig config;
  std::vector<float> weights;  // ModelLayout(config).total floats, arena order
  std::string source;          // the file(s) the weights came from
};

// path: a directory (config.json + model.safetensors, or config.json +
// model.safetensors.index.json and its shards; the single file wins when both exist, as in
// transformers), a .safetensors file (config.json beside it), a model.safetensors.index.json,
// or a .gguf file (each a regular file: io/files.h). Nothing the config sizes is allocated
// before the file backs it: the layout only when the file holds tensors of as many layers, the
// weights only once every tensor the layout needs is present with the right shape. Every tensor
// present must be one the layout uses, except rotary inv_freq buffers and, under tied
// embeddings, an lm_head bit-identical to the embedding; a tensor holding NaN or Inf is an
// error naming it. GGUF wq/wk rows are un-permuted into Hugging Face's rotate-half order.
LoadedModel load_model(const std::string& path);

// Writes a Hugging Face checkpoint into dir (created if needed): config.json, the weights (bf16
// rounds to nearest even, or f32) and the tokenizer's files (io/tokenizer_export.h; none for a
// preset). Weights above max_shard_bytes (5 GB, transformers' default max_shard_size) go to
// shards model-00001-of-0000N.safetensors listed in model.safetensors.index.json, as
// save_pretrained writes them; otherwise to model.safetensors. Every file is written to a
// temporary name and fsynced before any is renamed into place, so a crash mid-save leaves the
// previous files intact; files of an earlier checkpoint in dir that this one does not write (the
// other weight layout, another model's tokenizer files) are removed after the renames.
enum class SaveDtype { bf16, f32 };
inline constexpr ChoiceTable<SaveDtype, 2> kSaveDtypeChoices{{{"bf16", SaveDtype::bf16}, {"f32", SaveDtype::f32}}};
inline const char* name(SaveDtype d) { return choice_name(kSaveDtypeChoices, d); }
inline constexpr int64_t kHfMaxShardBytes = 5'000'000'000;
void save_hf_checkpoint(const std::string& dir, const ModelLayout& layout, const float* weights, SaveDtype dtype,
                        const TokenizerFiles& tokenizer = {}, int64_t max_shard_bytes = kHfMaxShardBytes);

// The trainer state (StateBundle) as one safetensors file: fp32 tensors (1-D) and the JSON meta
// under the metadata key "owlore_state". Written atomically.
void save_state_bundle(const std::string& path, const StateBundle& state);
StateBundle load_state_bundle(const std::string& path);

}  // namespace owlore
