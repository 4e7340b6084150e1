// Loading a model into the fp32 weight arena of ModelLayout, from a Hugging Face checkpoint
// (config.json + safetensors, single or sharded) or a GGUF file, and saving a Hugging Face
// checkpoint that transformers' LlamaForCausalLM loads.
#pragma once
#include <string>
#include <vector>

#include "base/choices.h"
#include "base/state_bundle.h"
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

// Writes dir/model.safetensors (bf16 rounds to nearest even, or f32) and
// dir/config.json. Both are written to temporary files and fsynced before either is renamed into
// place, so a crash mid-save leaves the previous files intact. Creates dir if needed.
enum class SaveDtype { bf16, f32 };
inline constexpr ChoiceTable<SaveDtype, 2> kSaveDtypeChoices{{{"bf16", SaveDtype::bf16}, {"f32", SaveDtype::f32}}};
inline const char* name(SaveDtype d) { return choice_name(kSaveDtypeChoices, d); }
void save_hf_checkpoint(const std::string& dir, const ModelLayout& layout, const float* weights, SaveDtype dtype);

// The trainer state (StateBundle) as one safetensors file: fp32 tensors (1-D) and the JSON meta
// under the metadata key "owlore_state". Written atomically.
void save_state_bundle(const std::string& path, const StateBundle& state);
StateBundle load_state_bundle(const std::string& path);

}  // namespace owlore
