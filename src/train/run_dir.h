// The run directory (--out) and its checkpoints. A checkpoint is a directory checkpoint-<step>
// holding the Hugging Face model (config.json, model.safetensors), trainer_state.safetensors and
// the run's config.toml. It is written into checkpoint-<step>.partial and renamed into place only
// when complete, then <out>/checkpoint (a symlink) is swapped to it atomically (rename of a fresh
// link), and only then are older checkpoints pruned: a crash, a kill or a full disk at any moment
// leaves the last good checkpoint linked and loadable, and never a half-written one that looks
// usable. Leftover .partial directories of killed saves are removed when a run starts.
#pragma once
#include <functional>
#include <string>

#include "base/atomic_file.h"

namespace owlore {

class RunDir {
 public:
  // fresh: a new run into `path` — refused if the directory holds an earlier run's checkpoints or
  // metrics, unless overwrite (then they are deleted). resuming: the directory is kept as is.
  RunDir(std::string path, bool resuming, bool overwrite);
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  // Writes checkpoint-<step> with write_files(staging directory), links it, keeps the newest
  // `keep` checkpoints (the linked one always). Returns the linked path (<out>/checkpoint).
  std::string save(int step, int keep, const std::function<void(const std::string& dir)>& write_files);

 private:
  std::string path_;
};

// The checkpoint directory a --resume argument names: a checkpoint directory itself, or a run
// directory whose `checkpoint` link points to one. Throws saying what was looked for.
std::string resolve_checkpoint_dir(const std::string& path);

}  // namespace owlore
