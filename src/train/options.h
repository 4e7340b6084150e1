// The enum-valued options of the commands: which method trains, on which device.
#pragma once
#include "base/choices.h"

namespace owlore {

// DESIGN.md §1: the five methods share one loop.
enum class Method { full, lisa, owlore, ows, galore };
inline constexpr ChoiceTable<Method, 5> kMethodChoices{{{"full", Method::full},
                                                        {"lisa", Method::lisa},
                                                        {"owlore", Method::owlore},
                                                        {"ows", Method::ows},
                                                        {"galore", Method::galore}}};
inline const char* name(Method m) { return choice_name(kMethodChoices, m); }
// lisa, ows and owlore train a sampled few decoder layers; ows and owlore sample by outliers.
inline bool samples_layers(Method m) { return m == Method::lisa || m == Method::ows || m == Method::owlore; }
inline bool samples_by_outliers(Method m) { return m == Method::ows || m == Method::owlore; }
inline bool uses_galore(Method m) { return m == Method::owlore || m == Method::galore; }

// auto: the GPU when one is present, else the CPU (the test twin, slow).
enum class Device { automatic, cpu, cuda };
inline constexpr ChoiceTable<Device, 3> kDeviceChoices{
    {{"auto", Device::automatic}, {"cpu", Device::cpu}, {"cuda", Device::cuda}}};
inline const char* name(Device d) { return choice_name(kDeviceChoices, d); }
struct ModelConfig;
// cpu or cuda: auto becomes cuda when a CUDA device is present and the GPU model runs this
// config (the tiny test presets' head sizes run on the CPU twin only).
Device resolve_device(Device d, const ModelConfig& config);

}  // namespace owlore
