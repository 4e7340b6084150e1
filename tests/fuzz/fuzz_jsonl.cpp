// libFuzzer target for the instruction JSONL reader, with the real SmolLM2 tokenizer
// (fuzz_common.h): every input is read with skip_bad_lines false and true, and what it returns
// is packed into rows and iterated (exercise_rows.h). Anything but a clean return or an
// owlore::Error is a bug, and so is a stream whose mask does not cover its tokens, or a lenient
// read of a file the strict read accepted that differs from it. Built by tools/run_fuzz.sh,
// outside CMake.
#include <cstdint>
#include <string>

#include "base/error.h"
#include "exercise_rows.h"
#include "fuzz_common.h"
#include "io/token_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const owlore::Tokenizer& tokenizer = smollm2_tokenizer();
  stderr_sink().str("");
  const std::string text(reinterpret_cast<const char*>(data), size);
  owlore::TokenStream strict;
  bool strict_ok = false;
  for (bool skip_bad_lines : {false, true}) {
    owlore::InstructOptions options;
    options.chat_template = owlore::ChatTemplate::kChatML;  // as SmolLM2's GGUF resolves
    options.skip_bad_lines = skip_bad_lines;
    owlore::TokenStream stream;
    try {
      stream = owlore::parse_instruct_jsonl(text, "fuzz.jsonl", tokenizer, options);
    } catch (const owlore::Error&) {
      continue;
    }
    if (stream.tokens.empty() || stream.loss_mask.size() != stream.tokens.size()) __builtin_trap();
    if (stream.bad_lines != (int64_t)stream.problems.size()) __builtin_trap();
    if (!skip_bad_lines) {
      strict = stream;
      strict_ok = true;
    } else if (strict_ok && (stream.tokens != strict.tokens || stream.loss_mask != strict.loss_mask ||
                             stream.examples != strict.examples || stream.bad_lines != 0)) {
      __builtin_trap();
    }
    exercise_rows(stream);
  }
  return 0;
}
