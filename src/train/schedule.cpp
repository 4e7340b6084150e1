#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace owlore {

float LrSchedule::at(int step) const {
  if (warmup_steps > 0 && step <= warmup_steps) return peak_lr * (float)step / (float)warmup_steps;
  const int decay_steps = std::max(1, total_steps - warmup_steps);
  const float progress = std::min(1.0f, (float)(step - warmup_steps) / (float)decay_steps);
  const float min_lr = peak_lr * min_lr_ratio;
  return min_lr + 0.5f * (peak_lr - min_lr) * (1.0f + std::cos(3.14159265358979f * progress));
}

}  // namespace owlore
