// libFuzzer target for the GGUF reader: parse, read the llama config and the tokenizer metadata,
// dequantize every tensor, and un-permute wq/wk the way load_model does. Anything but a clean
// return or an owlore::Error is a bug. Built by tools/run_fuzz.sh, outside CMake.
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const owlore::GgufFile file(data, size, "fuzz.gguf");
    auto ignore_errors = [](auto&& f) {
      try {
        f();
      } catch (const owlore::Error&) {
      }
    };
    int n_heads = 0, n_kv_heads = 0;
    ignore_errors([&] {
      const owlore::ModelConfig c = file.config();
      n_heads = c.n_heads;
      n_kv_heads = c.n_kv_heads;
    });
    ignore_errors([&] { file.tokens(); });
    ignore_errors([&] { file.merges(); });
    ignore_errors([&] { file.token_types(); });
    ignore_errors([&] { (void)(file.bos_id() + file.eos_id() + file.padding_id()); });
    ignore_errors([&] { file.tokenizer_pre() + file.tokenizer_model(); });
    for (const std::string& key : file.keys()) {
      ignore_errors([&] { file.get_float(key); });
      ignore_errors([&] { file.get_float_array(key); });
      ignore_errors([&] { (void)file.get(key).type_name(); });
    }
    std::vector<float> out;
    for (const owlore::GgufTensor& t : file.tensors()) {
      ignore_errors([&] {
        out = file.dequantize(t);
        if (t.ne.size() == 2 && (t.name == "blk.0.attn_q.weight" || t.name == "blk.0.attn_k.weight")) {
          const int heads = t.name == "blk.0.attn_q.weight" ? n_heads : n_kv_heads;
          owlore::unpermute_rows_from_interleaved_rope(out.data(), t.ne[1], t.ne[0], heads);
        }
      });
    }
  } catch (const owlore::Error&) {
  }
  return 0;
}
