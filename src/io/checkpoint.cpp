#include "io/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

namespace owlore {

namespace {
namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); i++) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

// The shape a layout slot has in a Hugging Face checkpoint: norms are 1-D.
std::vector<int64_t> hf_shape(const TensorSlot& slot) {
  if (slot.rows == 1) return {slot.cols};
  return {slot.rows, slot.cols};
}

std::string parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// Tensors of one Hugging Face checkpoint, possibly spread over shards.
struct HfTensors {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::pair<const SafetensorsFile*, const StTensor*>> where;

  void add_file(const std::string& path) {
    files.push_back(std::make_unique<SafetensorsFile>(path));
    for (const StTensor& t : files.back()->tensors()) where.emplace(t.name, std::make_pair(files.back().get(), &t));
  }
};

HfTensors open_sharded(const std::string& index_path) {
  const nlohmann::json index =
      nlohmann::json::parse(read_regular_file(index_path, "safetensors index"), nullptr, /*allow_exceptions=*/false);
  OWLORE_REQUIRE(!index.is_discarded(), index_path, ": not valid JSON");
  OWLORE_REQUIRE(index.is_object(), index_path, ": JSON is a ", index.type_name(), ", expected an object");
  const auto map = index.find("weight_map");
  OWLORE_REQUIRE(map != index.end() && map->is_object(), index_path,
                 ": missing object 'weight_map' {tensor name: shard file}");
  const std::string dir = parent_dir(index_path);
  HfTensors out;
  std::map<std::string, const SafetensorsFile*> shards;
  for (const auto& item : map->items()) {
    OWLORE_REQUIRE(item.value().is_string(), index_path, ": weight_map entry '", item.key(), "' is ",
                   item.value().dump(), ", expected a shard file name");
    const std::string shard = item.value().get<std::string>();
    OWLORE_REQUIRE(!shard.empty() && shard[0] != '/' && shard.find("..") == std::string::npos, index_path,
                   ": weight_map entry '", item.key(), "' names shard '", shard,
                   "', expected a file name inside the checkpoint directory");
    if (!shards.count(shard)) {
      out.add_file(dir + "/" + shard);
      shards[shard] = out.files.back().get();
    }
    const SafetensorsFile* file = shards[shard];
    const StTensor* t = file->find(item.key());
    OWLORE_REQUIRE(t, file->source(), ": tensor '", item.key(), "' is listed in ", index_path,
                   " but is not in this shard");
    out.where[item.key()] = {file, t};  // the index decides where a name lives
  }
  return out;
}

// "a, b, c and 5 more": the first few names of a list for an error message.
std::string name_list(const std::vector<std::string>& names) {
  constexpr size_t kListed = 6;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kListed; i++) out += (i ? ", " : "") + ("'" + names[i] + "'");
  if (names.size() > kListed) out += " and " + std::to_string(names.size() - kListed) + " more";
  return out;
}

// The layer N of a name "<prefix>N.", or -1.
int64_t layer_of(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t dot = name.find('.', prefix.size());
  const std::string digits = name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
  if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

// A config's shapes are trusted only as far as the file backs them. The layout (a slot per
// tensor) is built only when the file holds tensors of at least as many distinct layers as the
// config names (at most one per tensor): otherwise num_hidden_layers 2147483647 beside a small
// file would allocate slots until the OOM killer ends the run. The arena (4 bytes per parameter)
// is allocated only once every slot has matched a distinct tensor of its exact shape, so it
// never holds more floats than the file's tensors hold elements, and those were checked against
// the file's size when it was opened.
void require_layers_present(const ModelConfig& c, const std::set<int64_t>& layers, const std::string& config_source,
                            const std::string& layers_key, const std::string& tensor_source) {
  OWLORE_REQUIRE(c.n_layers <= (int64_t)layers.size(), config_source, ": ", layers_key, " is ", c.n_layers, ", but ",
                 tensor_source, " holds tensors of ", layers.size(), " layer", layers.size() == 1 ? "" : "s",
                 ": the config does not describe these weights");
}

// NaN or Inf in a weight poisons every forward and backward that reads it, and the loss a user
// reads (JSON has no NaN: it prints null); refuse it at load, naming the tensor.
void require_finite(const float* x, int64_t n, const std::string& source, const std::string& tensor) {
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++)
    if (!std::isfinite(x[i]) && bad++ == 0) first = i;
  OWLORE_REQUIRE(bad == 0, source, ": tensor '", tensor, "' holds ", bad, " non-finite values (NaN or Inf) among ", n,
                 ", the first at element ", first);
}

LoadedModel load_hf(const std::string& config_path, HfTensors tensors, const std::string& source) {
  LoadedModel model;
  model.config = read_hf_config(config_path);
  model.source = source;
  const ModelConfig& c = model.config;
  std::set<int64_t> layers;
  for (const auto& [name, where] : tensors.where)
    if (const int64_t l = layer_of(name, "model.layers."); l >= 0) layers.insert(l);
  require_layers_present(c, layers, config_path, "num_hidden_layers", source);
  const ModelLayout layout(c);

  // Every tensor the layout needs, with its shape, before the arena is allocated (see
  // require_layers_present).
  std::vector<std::pair<const SafetensorsFile*, const StTensor*>> found;
  std::set<std::string> used;
  for (const TensorSlot& slot : layout.tensors) {
    const auto it = tensors.where.find(slot.name);
    OWLORE_REQUIRE(it != tensors.where.end(), source, ": tensor '", slot.name, "' not found (expected shape ",
                   shape_string(hf_shape(slot)), " for ", config_path, ")");
    const auto [file, t] = it->second;
    OWLORE_REQUIRE(t->shape == hf_shape(slot), file->source(), ": tensor '", slot.name, "' has shape ",
                   shape_string(t->shape), ", expected ", shape_string(hf_shape(slot)), " from ", config_path);
    found.push_back(it->second);
    used.insert(slot.name);
  }
  // A tensor the config does not use means the config is not this file's (num_hidden_layers 1 on
  // a 3-layer file would train a third of the model and save it as the whole). Two are harmless:
  // rotary inv_freq buffers (the RoPE frequencies, which the runtime computes from rope_theta;
  // older transformers saved them), and under tied embeddings an lm_head equal to the embedding
  // (exporters that untie shared tensors write the copy; it carries nothing the tie drops),
  // which is compared once the embedding is read.
  std::vector<std::string> unused;
  int64_t top_layer = -1;
  for (const auto& [name, where] : tensors.where) {
    if (used.count(name) || ends_with(name, ".rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && c.tied_embeddings) continue;
    unused.push_back(name);
    top_layer = std::max(top_layer, layer_of(name, "model.layers."));
  }
  if (!unused.empty())
    fail(source, ": ", unused.size(), " tensor", unused.size() > 1 ? "s" : "", " that ", config_path,
         " does not use: ", name_list(unused),
         top_layer >= c.n_layers ? " (num_hidden_layers is " + std::to_string(c.n_layers) +
                                       ", but the file holds layers up to " + std::to_string(top_layer) + ")"
                                 : std::string(),
         "; the config does not describe these weights");

  model.weights.assign((size_t)layout.total, 0.0f);
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const TensorSlot& slot = layout.tensors[i];
    const auto [file, t] = found[i];
    float* dst = model.weights.data() + slot.offset;
    file->read_float(*t, dst);
    require_finite(dst, slot.numel(), file->source(), slot.name);
  }
  if (const auto head = tensors.where.find("lm_head.weight"); c.tied_embeddings && head != tensors.where.end()) {
    const auto [file, t] = head->second;
    const TensorSlot& embedding = layout.tensors.front();  // the arena's first slot
    bool same = t->shape == hf_shape(embedding);
    if (same) {
      const std::vector<float> values = file->read_float(*t);
      same = std::memcmp(values.data(), model.weights.data() + layout.embedding, values.size() * sizeof(float)) == 0;
    }
    OWLORE_REQUIRE(same, file->source(), ": tensor 'lm_head.weight' (shape ", shape_string(t->shape),
                   ") differs from 'model.embed_tokens.weight', but ", config_path,
                   " sets tie_word_embeddings true, which would replace the head by the embedding ",
                   "(set it false to load this head)");
  }
  return model;
}

LoadedModel load_gguf(const std::string& path) {
  const GgufFile file(path);
  LoadedModel model;
  model.config = file.config();
  model.source = path;
  const ModelConfig& c = model.config;
  std::set<int64_t> blocks;
  for (const GgufTensor& t : file.tensors())
    if (const int64_t l = layer_of(t.name, "blk."); l >= 0) blocks.insert(l);
  require_layers_present(c, blocks, path, "llama.block_count", path);
  const ModelLayout layout(c);

  std::vector<const GgufTensor*> found;
  std::set<std::string> used;
  for (const TensorSlot& slot : layout.tensors) {
    const std::string name = gguf_name_for_hf(slot.name);
    OWLORE_REQUIRE(!name.empty(), path, ": internal: no GGUF name for '", slot.name, "'");
    const GgufTensor* t = file.find_tensor(name);
    OWLORE_REQUIRE(t, path, ": tensor '", name, "' (", slot.name, ") not found (expected shape ",
                   shape_string(hf_shape(slot)), ")");
    OWLORE_REQUIRE(t->hf_shape() == hf_shape(slot), path, ": tensor '", name, "' (", slot.name, ") has shape ",
                   shape_string(t->hf_shape()), " (ne ", shape_string(t->ne), "), expected ",
                   shape_string(hf_shape(slot)));
    found.push_back(t);
    used.insert(name);
  }
  // As for safetensors: every tensor must be one the model uses, except blk.N.attn_rot_embd,
  // the GGUF name of the rotary inv_freq buffer (llama.cpp's LLM_TENSOR_ATTN_ROT_EMBD). The head
  // is untied exactly when output.weight is present, so that one is always used.
  // rope_freqs.weight, llama.cpp's per-frequency RoPE scaling (Llama 3.1), is refused too: plain
  // RoPE would run such a model wrong.
  std::vector<std::string> unused;
  int64_t top_block = -1;
  for (const GgufTensor& t : file.tensors()) {
    if (used.count(t.name) || (layer_of(t.name, "blk.") >= 0 && ends_with(t.name, ".attn_rot_embd.weight"))) continue;
    unused.push_back(t.name);
    top_block = std::max(top_block, layer_of(t.name, "blk."));
  }
  if (!unused.empty())
    fail(path, ": ", unused.size(), " tensor", unused.size() > 1 ? "s" : "", " that the model does not use: ",
         name_list(unused),
         top_block >= c.n_layers ? " (llama.block_count is " + std::to_string(c.n_layers) +
                                       ", but the file holds blocks up to " + std::to_string(top_block) + ")"
                                 : std::string(),
         "; the metadata does not describe these weights");

  model.weights.assign((size_t)layout.total, 0.0f);
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const TensorSlot& slot = layout.tensors[i];
    const GgufTensor* t = found[i];
    float* dst = model.weights.data() + slot.offset;
    file.dequantize(*t, dst);
    require_finite(dst, slot.numel(), path, t->name);
    // llama.cpp's converter stored wq/wk rows for interleaved RoPE; the runtime (like
    // transformers) rotates halves, so put the rows back.
    if (ends_with(slot.name, "self_attn.q_proj.weight"))
      unpermute_rows_from_interleaved_rope(dst, slot.rows, slot.cols, c.n_heads);
    else if (ends_with(slot.name, "self_attn.k_proj.weight"))
      unpermute_rows_from_interleaved_rope(dst, slot.rows, slot.cols, c.n_kv_heads);
  }
  return model;
}
}  // namespace

LoadedModel load_model(const std::string& path) {
  std::error_code ec;
  OWLORE_REQUIRE(fs::exists(path, ec), path, ": no such file or directory (expected a checkpoint directory, ",
                 "a .safetensors file or a .gguf file)");
  if (fs::is_directory(path, ec)) {
    const std::string config = path + "/config.json";
    const std::string single = path + "/model.safetensors", index = path + "/model.safetensors.index.json";
    const bool has_single = fs::exists(single, ec), has_index = fs::exists(index, ec);
    OWLORE_REQUIRE(has_single || has_index, path, ": directory has neither model.safetensors nor ",
                   "model.safetensors.index.json");
    OWLORE_REQUIRE(fs::exists(config, ec), path, ": directory has no config.json");
    if (has_single) {
      HfTensors tensors;
      tensors.add_file(single);
      return load_hf(config, std::move(tensors), single);
    }
    return load_hf(config, open_sharded(index), index);
  }
  // Anything but a directory must be a regular file (a FIFO would block the magic read forever).
  if (ends_with(path, ".gguf") || RegularFile(path, "model file").read_prefix(4) == "GGUF") return load_gguf(path);
  const std::string config = parent_dir(path) + "/config.json";
  if (ends_with(path, ".index.json")) {
    OWLORE_REQUIRE(fs::exists(config, ec), path, ": no config.json beside it (looked for ", config, ")");
    return load_hf(config, open_sharded(path), path);
  }
  if (ends_with(path, ".safetensors")) {
    OWLORE_REQUIRE(fs::exists(config, ec), path, ": no config.json beside it (looked for ", config, ")");
    HfTensors tensors;
    tensors.add_file(path);
    return load_hf(config, std::move(tensors), path);
  }
  fail(path, ": unknown model format (expected a directory, a .safetensors file, a ",
       "model.safetensors.index.json or a .gguf file)");
}

void save_hf_checkpoint(const std::string& dir, const ModelLayout& layout, const float* weights, SaveDtype dtype,
                        const TokenizerFiles& tokenizer, int64_t max_shard_bytes) {
  OWLORE_REQUIRE(max_shard_bytes > 0, "max_shard_bytes must be > 0, got ", max_shard_bytes);
  std::error_code ec;
  fs::create_directories(dir, ec);
  OWLORE_REQUIRE(!ec && fs::is_directory(dir), dir, ": cannot create checkpoint directory: ", ec.message());
  const int64_t element_bytes = dtype == SaveDtype::bf16 ? 2 : 4;
  // Shards in layout order, each closed before the tensor that would take it past the limit (a
  // tensor larger than the limit gets a shard of its own), as transformers' shard_checkpoint does.
  std::vector<std::vector<StWriteTensor>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const TensorSlot& slot : layout.tensors) {
    const int64_t bytes = slot.numel() * element_bytes;
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({slot.name, hf_shape(slot), weights + slot.offset});
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const bool sharded = shards.size() > 1;
  auto shard_name = [&](size_t i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    return std::string(name);
  };

  // Every file becomes durable under a temporary name before any replaces its old version; only
  // the renames remain between a complete old and a complete new checkpoint.
  std::vector<std::unique_ptr<AtomicFile>> files;
  std::set<std::string> written;
  auto add_file = [&](const std::string& name) -> AtomicFile& {
    files.push_back(std::make_unique<AtomicFile>(dir + "/" + name));
    written.insert(name);
    return *files.back();
  };
  auto add_text = [&](const std::string& name, const std::string& text) {
    AtomicFile& file = add_file(name);
    file.write(text.data(), text.size());
    file.sync();
  };
  const StDtype st_dtype = dtype == SaveDtype::bf16 ? StDtype::BF16 : StDtype::F32;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); i++) {
    const std::string name = sharded ? shard_name(i) : "model.safetensors";
    AtomicFile& file = add_file(name);
    write_safetensors(file, shards[i], st_dtype, {{"format", "pt"}});
    file.sync();
    for (const StWriteTensor& t : shards[i]) weight_map[t.name] = name;
  }
  if (sharded) {
    const nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    add_text("model.safetensors.index.json", index.dump(2) + "\n");
  }
  add_text("config.json", hf_config_json(layout.config, dtype == SaveDtype::bf16 ? "bfloat16" : "float32"));
  for (const auto& [name, bytes] : tokenizer.files) {
    OWLORE_REQUIRE(!written.count(name), dir, ": tokenizer file '", name, "' would replace a file of the checkpoint");
    add_text(name, bytes);
  }
  for (const auto& file : files) file->commit();

  // What an earlier checkpoint in this directory left that this one does not replace would be
  // read with it: model.safetensors wins over an index in load_model, and a tokenizer.json of
  // another model would be this one's.
  std::vector<std::string> stale;
  for (const char* name : kTokenizerFileNames) stale.push_back(name);
  stale.push_back("model.safetensors");
  stale.push_back("model.safetensors.index.json");
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("model-", 0) == 0 && ends_with(name, ".safetensors")) stale.push_back(name);
  }
  for (const std::string& name : stale)
    if (!written.count(name)) fs::remove(dir + "/" + name, ec);
}

void save_state_bundle(const std::string& path, const StateBundle& state) {
  std::vector<StWriteTensor> tensors;
  for (const auto& [name, values] : state.tensors) tensors.push_back({name, {(int64_t)values.size()}, values.data()});
  write_safetensors(path, tensors, StDtype::F32, {{"format", "owlore-trainer-state"}, {"owlore_state", state.meta.dump()}});
}

StateBundle load_state_bundle(const std::string& path) {
  const SafetensorsFile file(path);
  const auto meta = file.metadata().find("owlore_state");
  OWLORE_REQUIRE(meta != file.metadata().end(), path, ": not an owlore trainer state (no 'owlore_state' metadata)");
  StateBundle state;
  try {
    state.meta = nlohmann::json::parse(meta->second);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": trainer state metadata is not valid JSON: ", e.what());
  }
  for (const StTensor& t : file.tensors()) state.tensors[t.name] = file.read_float(t);
  return state;
}

}  // namespace owlore
