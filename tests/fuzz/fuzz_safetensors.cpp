// libFuzzer target for the safetensors reader: parse, then convert every tensor that converts.
// Anything but a clean return or an owlore::Error (crash, sanitizer report, other exception) is
// a bug. Built by tools/run_fuzz.sh, outside CMake.
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const owlore::SafetensorsFile file(data, size, "fuzz.safetensors");
    std::vector<float> out;
    for (const owlore::StTensor& t : file.tensors()) {
      try {
        out.resize((size_t)t.numel());
        file.read_float(t, out.data());
      } catch (const owlore::Error&) {
      }
    }
    file.find("a");
  } catch (const owlore::Error&) {
  }
  return 0;
}
