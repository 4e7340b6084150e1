// libFuzzer target for the GGUF tokenizer vocabulary: parse the GGUF, build the BpeVocab from its
// tokenizer.ggml.* metadata and a Tokenizer from that, then encode/decode through it (what
// load_model_tokenizer does for a .gguf). Anything but a clean return or an owlore::Error from
// the reader, gguf_bpe_vocab or the Tokenizer constructor is a bug. Built by tools/run_fuzz.sh.
#include <cstdint>
#include <memory>

#include "base/error.h"
#include "exercise_tokenizer.h"
#include "io/gguf.h"
#include "io/model_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<owlore::Tokenizer> tokenizer;
  int64_t file_bos = 0, file_eos = 0, file_pad = 0;
  try {
    const owlore::GgufFile file(data, size, "fuzz.gguf");
    tokenizer = std::make_unique<owlore::Tokenizer>(owlore::gguf_bpe_vocab(file));
    file_bos = file.bos_id();
    file_eos = file.eos_id();
    file_pad = file.padding_id();
  } catch (const owlore::Error&) {
    return 0;
  }
  // The special ids are the file's own, not a truncation of them.
  const owlore::BpeVocab& vocab = tokenizer->vocab();
  if (vocab.bos != file_bos || vocab.eos != file_eos || vocab.pad != file_pad) __builtin_trap();
  exercise_tokenizer(*tokenizer);
  return 0;
}
