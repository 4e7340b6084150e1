// Shared by the data fuzz targets: the real SmolLM2 tokenizer, built once from
// tests/data/smollm2_tokenizer.json (tools/run_fuzz.sh defines OWLORE_SOURCE_DIR), and a sink
// for what the readers report on stderr (skipped lines, dropped bytes), so that the fuzzer's log
// stays readable; the text is still formatted, into a buffer the target empties per input.
#pragma once
#include <iostream>
#include <sstream>
#include <string>

#include "io/tokenizer.h"

inline const owlore::Tokenizer& smollm2_tokenizer() {
  static const owlore::Tokenizer tokenizer(
      owlore::load_tokenizer_json(std::string(OWLORE_SOURCE_DIR) + "/tests/data/smollm2_tokenizer.json"));
  return tokenizer;
}

// Never destroyed: std::cerr still points at it while the program exits.
inline std::ostringstream& stderr_sink() {
  static std::ostringstream* const sink = [] {
    auto* s = new std::ostringstream;
    std::cerr.rdbuf(s->rdbuf());
    return s;
  }();
  return *sink;
}
