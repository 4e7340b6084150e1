// Checked reading of a trainer state (StateBundle) on --resume: every tensor and every JSON field
// is read through here, so a damaged or foreign file gives one clear error naming the file, the
// tensor or key, and what was expected, never an out-of-bounds copy or a raw JSON exception.
// The reader also remembers which tensors were read: finish() refuses tensors nobody asked for
// (a renamed tensor would otherwise drop its state without a word).
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/state_bundle.h"

namespace owlore {

// One JSON object and the path that names it in errors ("FILE: meta.galore['w'].rank").
class JsonFields {
 public:
  JsonFields(const nlohmann::json& object, std::string where);
  const std::string& where() const { return where_; }
  bool has(const std::string& key) const;
  const nlohmann::json& raw(const std::string& key) const;  // present, any type
  JsonFields object(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t lo, int64_t hi) const;
  uint64_t unsigned64(const std::string& key) const;  // a JSON integer or its decimal string
  double number(const std::string& key, double lo, double hi) const;  // finite, in [lo, hi]
  bool boolean(const std::string& key) const;
  std::string string(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key, int64_t lo, int64_t hi) const;
  std::vector<bool> booleans(const std::string& key) const;
  std::vector<double> numbers(const std::string& key, double lo, double hi) const;
  // The keys of this object.
  std::vector<std::string> keys() const;
  std::string path(const std::string& key) const;  // where_ + key, for messages

 private:
  const nlohmann::json& object_;
  std::string where_;
};

class StateReader {
 public:
  StateReader(const StateBundle& bundle, std::string source);
  const std::string& source() const { return source_; }
  JsonFields meta() const { return JsonFields(bundle_.meta, source_ + ": meta"); }
  bool has_tensor(const std::string& name) const { return bundle_.tensors.count(name) > 0; }
  // Tensor `name`, which must hold exactly n values (all finite: moments, projectors and weights
  // are never inf or NaN in a state worth resuming). Marks it read.
  const std::vector<float>& tensor(const std::string& name, int64_t n);
  // As tensor(), but empty is allowed too (a projector before its first refresh).
  const std::vector<float>& tensor_or_empty(const std::string& name, int64_t n);
  // Every tensor of the file was read; else an error naming the unread ones.
  void finish() const;

 private:
  const std::vector<float>& checked(const std::string& name, int64_t n, bool allow_empty);
  const StateBundle& bundle_;
  std::string source_;
  std::set<std::string> read_;
};

}  // namespace owlore
