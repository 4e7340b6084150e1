// Everything a run carries from one step to the next, as named fp32 arrays (exact: fp32 and
// bf16 values are representable) plus small counters in JSON. Backends and the loop fill it;
// io/checkpoint writes it as one safetensors file (trainer_state.safetensors) so that a resumed
// run continues bit-exactly.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace owlore {

struct StateBundle {
  std::map<std::string, std::vector<float>> tensors;
  nlohmann::json meta = nlohmann::json::object();
};

}  // namespace owlore
