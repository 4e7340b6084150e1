// libFuzzer target for the tokenizer.json reader: parse the text, build a Tokenizer from what it
// accepts and encode/decode through it. Anything but a clean return or an owlore::Error from the
// reader or the Tokenizer constructor (a crash, a sanitizer report, another exception, an error
// from the built tokenizer) is a bug. Built by tools/run_fuzz.sh, outside CMake.
#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "exercise_tokenizer.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<owlore::Tokenizer> tokenizer;
  try {
    tokenizer = std::make_unique<owlore::Tokenizer>(
        owlore::parse_tokenizer_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json"));
  } catch (const owlore::Error&) {
    return 0;
  }
  exercise_tokenizer(*tokenizer);
  return 0;
}
