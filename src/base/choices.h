// Options that take one of a few names (--method, --device, --moments, ...) are enums, parsed
// once where the text comes in (the CLI, a config file, a trainer state) through one table per
// enum: the name a value prints as, and the list an error offers.
#pragma once
#include <array>
#include <string>
#include <utility>

#include "base/error.h"

namespace owlore {

template <typename E, size_t N>
using ChoiceTable = std::array<std::pair<const char*, E>, N>;

template <typename E, size_t N>
const char* choice_name(const ChoiceTable<E, N>& table, E value) {
  for (const auto& [name, v] : table)
    if (v == value) return name;
  return "?";
}

// "a, b or c"
template <typename E, size_t N>
std::string choice_list(const ChoiceTable<E, N>& table) {
  std::string out;
  for (size_t i = 0; i < N; i++) out += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + table[i].first;
  return out;
}

// The value named `text`; else an error naming `what` (a flag, a key) and the choices.
template <typename E, size_t N>
E parse_choice(const ChoiceTable<E, N>& table, const std::string& text, const std::string& what) {
  for (const auto& [name, v] : table)
    if (text == name) return v;
  fail(what, ": unknown value '", text, "' (expected ", choice_list(table), ")");
}

}  // namespace owlore
