#include "train/options.h"

#include "model/model_gpu.h"

namespace owlore {

Device resolve_device(Device d, const ModelConfig& config) {
  if (d != Device::automatic) return d;
  return cuda_available() && gpu_unsupported_reason(config).empty() ? Device::cuda : Device::cpu;
}

}  // namespace owlore
