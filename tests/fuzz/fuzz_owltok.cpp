// libFuzzer target for the --data reader: the input is written to a per-process file (the
// reader works on paths: it sizes the file before reading, which a stream in memory would not
// test), then is_token_file, read_token_file and load_token_stream read it, the latter without
// a tokenizer (byte tokens) and with the real SmolLM2 one (fuzz_common.h), and what it returns
// is packed into rows and iterated (exercise_rows.h). What read_token_file accepts must survive
// write_token_file and read back identical. Anything but a clean return or an owlore::Error is
// a bug. Built by tools/run_fuzz.sh, outside CMake.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "exercise_rows.h"
#include "fuzz_common.h"
#include "io/token_data.h"

namespace {

// Per process, so that several fuzzers (-jobs) do not share files; removed at exit.
struct TempFiles {
  std::string input, copy;
  TempFiles() {
    const std::string base = "/tmp/owlore_fuzz_owltok_" + std::to_string(getpid());
    input = base + ".bin";
    copy = base + ".copy.bin";
  }
  ~TempFiles() {
    std::remove(input.c_str());
    std::remove(copy.c_str());
  }
};

const TempFiles& temp_files() {
  static const TempFiles files;
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stderr_sink().str("");
  const std::string& path = temp_files().input;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), (std::streamsize)size);
    if (!out.good()) std::abort();  // the harness itself failed (disk full): not a finding
  }
  const bool magic = owlore::is_token_file(path);
  try {
    const std::vector<int32_t> tokens = owlore::read_token_file(path);
    if (!magic) __builtin_trap();  // read_token_file accepted a file without the magic
    owlore::write_token_file(temp_files().copy, tokens);
    if (owlore::read_token_file(temp_files().copy) != tokens) __builtin_trap();
  } catch (const owlore::Error&) {
  }
  for (const owlore::Tokenizer* tokenizer : {(const owlore::Tokenizer*)nullptr, &smollm2_tokenizer()}) {
    owlore::TokenStream stream;
    try {
      stream = owlore::load_token_stream(path, tokenizer);
    } catch (const owlore::Error&) {
      continue;
    }
    exercise_rows(stream);
  }
  return 0;
}
