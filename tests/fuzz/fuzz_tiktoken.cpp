// libFuzzer target for the tiktoken tokenizer.model reader (Meta's LLaMA-3 format): parse the
// text, build a Tokenizer from what it accepts and encode/decode through it. Anything but a clean
// return or an owlore::Error from the reader or the Tokenizer constructor is a bug. Built by
// tools/run_fuzz.sh, outside CMake.
#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "exercise_tokenizer.h"
#include "io/tiktoken.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)owlore::looks_like_tiktoken(text.substr(0, 256));
  std::unique_ptr<owlore::Tokenizer> tokenizer;
  try {
    tokenizer = std::make_unique<owlore::Tokenizer>(owlore::parse_tiktoken_model(text, "fuzz/tokenizer.model"));
  } catch (const owlore::Error&) {
    return 0;
  }
  exercise_tokenizer(*tokenizer);
  return 0;
}
