#include "base/state_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "base/error.h"

namespace owlore {

namespace {
std::string shown(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}
}  // namespace

JsonFields::JsonFields(const nlohmann::json& object, std::string where) : object_(object), where_(std::move(where)) {
  OWLORE_REQUIRE(object_.is_object(), where_, ": expected a JSON object, got ", shown(object_));
}

std::string JsonFields::path(const std::string& key) const { return where_ + "." + key; }

bool JsonFields::has(const std::string& key) const { return object_.contains(key); }

const nlohmann::json& JsonFields::raw(const std::string& key) const {
  const auto it = object_.find(key);
  OWLORE_REQUIRE(it != object_.end(), where_, ": missing key '", key, "'");
  return *it;
}

JsonFields JsonFields::object(const std::string& key) const { return JsonFields(raw(key), path(key)); }

namespace {
// A JSON integer within [lo, hi] (unsigned values beyond int64 are out of range, not wrapped).
int64_t integer_value(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& where) {
  bool in_range = false;
  int64_t value = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    in_range = u <= (uint64_t)std::numeric_limits<int64_t>::max() && (int64_t)u >= lo && (int64_t)u <= hi;
    value = in_range ? (int64_t)u : 0;
  } else if (v.is_number_integer()) {
    value = v.get<int64_t>();
    in_range = value >= lo && value <= hi;
  } else {
    fail(where, ": expected an integer in [", lo, ", ", hi, "], got ", shown(v));
  }
  OWLORE_REQUIRE(in_range, where, ": ", shown(v), " is outside [", lo, ", ", hi, "]");
  return value;
}
double number_value(const nlohmann::json& v, double lo, double hi, const std::string& where) {
  OWLORE_REQUIRE(v.is_number(), where, ": expected a number, got ", shown(v));
  const double x = v.get<double>();
  OWLORE_REQUIRE(std::isfinite(x) && x >= lo && x <= hi, where, ": ", shown(v), " is outside [", lo, ", ", hi, "]");
  return x;
}
const nlohmann::json& array_value(const nlohmann::json& v, const std::string& where) {
  OWLORE_REQUIRE(v.is_array(), where, ": expected an array, got ", shown(v));
  return v;
}
}  // namespace

int64_t JsonFields::integer(const std::string& key, int64_t lo, int64_t hi) const {
  return integer_value(raw(key), lo, hi, path(key));
}

uint64_t JsonFields::unsigned64(const std::string& key) const {
  const nlohmann::json& v = raw(key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return (uint64_t)v.get<int64_t>();
  OWLORE_REQUIRE(v.is_string(), path(key), ": expected an unsigned 64-bit integer, got ", shown(v));
  const std::string text = v.get<std::string>();
  OWLORE_REQUIRE(!text.empty() && text.size() <= 20 && text.find_first_not_of("0123456789") == std::string::npos,
                 path(key), ": '", text, "' is not an unsigned 64-bit integer");
  errno = 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(text.c_str(), &end, 10);
  OWLORE_REQUIRE(errno == 0 && end && *end == 0, path(key), ": '", text, "' is not an unsigned 64-bit integer");
  return (uint64_t)x;
}

double JsonFields::number(const std::string& key, double lo, double hi) const {
  return number_value(raw(key), lo, hi, path(key));
}

bool JsonFields::boolean(const std::string& key) const {
  const nlohmann::json& v = raw(key);
  OWLORE_REQUIRE(v.is_boolean(), path(key), ": expected true or false, got ", shown(v));
  return v.get<bool>();
}

std::string JsonFields::string(const std::string& key) const {
  const nlohmann::json& v = raw(key);
  OWLORE_REQUIRE(v.is_string(), path(key), ": expected a string, got ", shown(v));
  return v.get<std::string>();
}

std::vector<int64_t> JsonFields::integers(const std::string& key, int64_t lo, int64_t hi) const {
  const nlohmann::json& a = array_value(raw(key), path(key));
  std::vector<int64_t> out;
  for (size_t i = 0; i < a.size(); i++) out.push_back(integer_value(a[i], lo, hi, path(key) + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<bool> JsonFields::booleans(const std::string& key) const {
  const nlohmann::json& a = array_value(raw(key), path(key));
  std::vector<bool> out;
  for (size_t i = 0; i < a.size(); i++) {
    OWLORE_REQUIRE(a[i].is_boolean(), path(key), "[", i, "]: expected true or false, got ", shown(a[i]));
    out.push_back(a[i].get<bool>());
  }
  return out;
}

std::vector<double> JsonFields::numbers(const std::string& key, double lo, double hi) const {
  const nlohmann::json& a = array_value(raw(key), path(key));
  std::vector<double> out;
  for (size_t i = 0; i < a.size(); i++) out.push_back(number_value(a[i], lo, hi, path(key) + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<std::string> JsonFields::keys() const {
  std::vector<std::string> out;
  for (const auto& item : object_.items()) out.push_back(item.key());
  return out;
}

StateReader::StateReader(const StateBundle& bundle, std::string source) : bundle_(bundle), source_(std::move(source)) {}

const std::vector<float>& StateReader::checked(const std::string& name, int64_t n, bool allow_empty) {
  const auto it = bundle_.tensors.find(name);
  OWLORE_REQUIRE(it != bundle_.tensors.end(), source_, ": tensor '", name, "' is missing (expected ", n, " values)");
  const std::vector<float>& values = it->second;
  OWLORE_REQUIRE((int64_t)values.size() == n || (allow_empty && values.empty()), source_, ": tensor '", name, "' has ",
                 values.size(), " values, expected ", n, allow_empty ? " (or none)" : "");
  int64_t bad = 0;
  for (float x : values) bad += !std::isfinite(x);
  OWLORE_REQUIRE(bad == 0, source_, ": tensor '", name, "' holds ", bad, " non-finite values");
  read_.insert(name);
  return values;
}

const std::vector<float>& StateReader::tensor(const std::string& name, int64_t n) { return checked(name, n, false); }
const std::vector<float>& StateReader::tensor_or_empty(const std::string& name, int64_t n) {
  return checked(name, n, true);
}

void StateReader::finish() const {
  std::vector<std::string> unread;
  for (const auto& [name, values] : bundle_.tensors)
    if (!read_.count(name)) unread.push_back(name);
  if (unread.empty()) return;
  std::string list;
  for (size_t i = 0; i < unread.size() && i < 5; i++) list += (i ? ", '" : "'") + unread[i] + "'";
  if (unread.size() > 5) list += " and " + std::to_string(unread.size() - 5) + " more";
  fail(source_, ": ", unread.size(), " tensor(s) this run has no place for: ", list,
       " (a damaged name, or the state of another model or method)");
}

}  // namespace owlore
