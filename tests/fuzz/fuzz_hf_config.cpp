// libFuzzer target for the Hugging Face config.json parser (and the writer on what it accepts).
#include <cstdint>
#include <string>

#include "base/error.h"
#include "io/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const owlore::ModelConfig c =
        owlore::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
    const owlore::ModelConfig back = owlore::parse_hf_config(owlore::hf_config_json(c, "bfloat16"), "round trip");
    if (back.d_model != c.d_model || back.n_layers != c.n_layers || back.rope_theta != c.rope_theta) __builtin_trap();
  } catch (const owlore::Error&) {
  }
  return 0;
}
