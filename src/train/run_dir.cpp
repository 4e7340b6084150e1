#include "train/run_dir.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "base/error.h"
#include "base/atomic_file.h"

namespace owlore {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "checkpoint-";
constexpr const char* kPartial = ".partial";

// The step of a "checkpoint-<step>" name, or -1.
int checkpoint_step(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::string(kPrefix).size());
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(digits);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void remove_all_or_fail(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  OWLORE_REQUIRE(!ec, p.string(), ": cannot remove: ", ec.message());
}

void sync_directory(const fs::path& dir) { AtomicFile::sync_directory(dir.string()); }

}  // namespace

RunDir::RunDir(std::string path, bool resuming, bool overwrite) : path_(std::move(path)) {
  OWLORE_REQUIRE(!path_.empty(), "--out: empty path");
  std::error_code ec;
  if (fs::exists(path_, ec)) OWLORE_REQUIRE(fs::is_directory(path_, ec), path_, ": --out exists and is not a directory");
  fs::create_directories(path_, ec);
  OWLORE_REQUIRE(!ec && fs::is_directory(path_), path_, ": cannot create the run directory: ", ec.message());
  std::vector<fs::path> earlier;  // an earlier run's checkpoints, link and metrics
  for (const auto& entry : fs::directory_iterator(path_)) {
    const std::string name = entry.path().filename().string();
    if (ends_with(name, kPartial) && checkpoint_step(name.substr(0, name.size() - std::string(kPartial).size())) >= 0) {
      remove_all_or_fail(entry.path());  // a killed save: never linked, never complete
      continue;
    }
    if (checkpoint_step(name) >= 0 || name == "checkpoint" || name == "metrics.jsonl") earlier.push_back(entry.path());
  }
  if (resuming || earlier.empty()) return;
  OWLORE_REQUIRE(overwrite, path_, " holds an earlier run (", earlier.front().filename().string(),
                 earlier.size() > 1 ? " and more" : "",
                 "): continue it with --resume ", path_, ", write elsewhere with --out, or replace it with --overwrite");
  for (const fs::path& p : earlier) remove_all_or_fail(p);
}

std::string RunDir::save(int step, int keep, const std::function<void(const std::string& dir)>& write_files) {
  const std::string name = kPrefix + std::to_string(step);
  const fs::path final_dir = fs::path(path_) / name, staging = fs::path(path_) / (name + kPartial);
  const fs::path link = fs::path(path_) / "checkpoint", fresh_link = fs::path(path_) / "checkpoint.new";
  std::error_code ec;
  OWLORE_REQUIRE(!fs::exists(fs::symlink_status(link, ec)) || fs::is_symlink(fs::symlink_status(link, ec)),
                 link.string(), " exists and is not the checkpoint link owlore keeps: move it away");
  remove_all_or_fail(staging);
  fs::create_directories(staging, ec);
  OWLORE_REQUIRE(!ec, staging.string(), ": cannot create: ", ec.message());
  try {
    write_files(staging.string());
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);  // a failed save (full disk, bad weights) leaves nothing that looks usable
    throw;
  }
  // A checkpoint of the same step from an earlier attempt (the linked one, say) is replaced only
  // after the new one is complete: move it aside, move the new one in, then relink.
  const fs::path aside = fs::path(path_) / (name + ".replaced");
  const bool replacing = fs::exists(final_dir, ec);
  if (replacing) {
    remove_all_or_fail(aside);
    fs::rename(final_dir, aside, ec);
    OWLORE_REQUIRE(!ec, final_dir.string(), ": cannot move aside: ", ec.message());
  }
  fs::rename(staging, final_dir, ec);
  OWLORE_REQUIRE(!ec, staging.string(), ": cannot rename to ", final_dir.string(), ": ", ec.message());
  fs::remove(fresh_link, ec);
  fs::create_directory_symlink(name, fresh_link, ec);
  OWLORE_REQUIRE(!ec, fresh_link.string(), ": cannot create the checkpoint link: ", ec.message());
  fs::rename(fresh_link, link, ec);  // atomic on POSIX: the old link or the new one, never neither
  OWLORE_REQUIRE(!ec, link.string(), ": cannot replace the checkpoint link: ", ec.message());
  sync_directory(path_);
  if (replacing) remove_all_or_fail(aside);
  // Keep the newest `keep` (the one just linked is the newest written; prune by step number).
  std::vector<std::pair<int, fs::path>> others;
  for (const auto& entry : fs::directory_iterator(path_)) {
    const std::string other = entry.path().filename().string();
    const int s = checkpoint_step(other);
    if (s >= 0 && other != name) others.push_back({s, entry.path()});
  }
  // Checkpoints past this step belong to a branch abandoned by resuming from an earlier one: they
  // go first.
  for (auto& [s, p] : others)
    if (s > step) s = -1;
  std::sort(others.begin(), others.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < others.size(); i++)
    if ((int)i + 1 >= keep) remove_all_or_fail(others[i].second);
  return link.string();
}

std::string resolve_checkpoint_dir(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / "trainer_state.safetensors", ec)) return path;
  const fs::path linked = fs::path(path) / "checkpoint";
  if (fs::is_regular_file(linked / "trainer_state.safetensors", ec)) return linked.string();
  OWLORE_REQUIRE(fs::exists(path, ec), "--resume ", path, ": no such directory");
  fail("--resume ", path, ": no trainer_state.safetensors in it or in ", linked.string(),
       " (expected a checkpoint directory that owlore train wrote, e.g. OUT/checkpoint, or the run directory OUT)");
}

}  // namespace owlore
