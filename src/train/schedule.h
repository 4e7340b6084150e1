// Learning-rate schedule: linear warmup to the peak, then cosine decay to min_lr_ratio * peak
// (the schedule LISA, GaLore and OwLore all train with).
#pragma once

namespace owlore {

struct LrSchedule {
  float peak_lr = 3e-4f;
  float min_lr_ratio = 0.1f;
  int warmup_steps = 0;
  int total_steps = 1;
  // step counts from 1: warmup gives peak*step/warmup, so step 1 never trains at lr 0.
  float at(int step) const;
};

}  // namespace owlore
