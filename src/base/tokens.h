// Token-id conventions shared by the data loaders, the losses and their twins.
#pragma once

namespace owlore {

// A target the loss skips (Hugging Face's ignore_index). Every negative target is skipped; this
// is the value the loaders write.
constexpr int kIgnoreIndex = -100;

}  // namespace owlore
