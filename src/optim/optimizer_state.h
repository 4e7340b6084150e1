// The optimizer part of trainer_state.safetensors: one schema, written and read by both backends.
//   adam.<tensor>.m, adam.<tensor>.v      full-rank Adam moments, the tensor's numel each
//   meta["adam.steps"][<tensor>]          that tensor's own completed steps
//   galore.<tensor>.projector             rank x cols (right) or rows x rank (left); empty before
//                                         the first refresh
//   galore.<tensor>.m, galore.<tensor>.v  GaLore's moments, R's shape
//   meta["galore"][<tensor>]              {rows, cols, rank, right, step, refreshes, captured_energy}
// Every tensor that trains has state (a fresh one: step 0, zero moments); under --state keep, so
// may decoder tensors that do not train now (parked). Reading validates every size, rank, side
// and counter against what this run expects, through StateReader.
#pragma once
#include <string>
#include <vector>

#include "base/state_bundle.h"
#include "base/state_reader.h"
#include "model/layout.h"
#include "optim/galore_cpu.h"

namespace owlore {

struct AdamTensorState {
  std::vector<float> m, v;
  int step = 0;
};

// Creates meta["adam.steps"] and meta["galore"] (empty objects) if missing.
void begin_optimizer_state(StateBundle& out);
void add_adam_state(StateBundle& out, const std::string& tensor, AdamTensorState state);
void add_galore_state(StateBundle& out, const std::string& tensor, const GaloreState& state);

// Whether the file holds Adam / GaLore state for the tensor (meta entries; the tensors are
// checked when read).
bool has_adam_state(const StateReader& in, const std::string& tensor);
bool has_galore_state(const StateReader& in, const std::string& tensor);
// The state of tensor t, checked: numel-sized finite moments, a step in range.
AdamTensorState read_adam_state(StateReader& in, const TensorSlot& t);
// The GaLore state of matrix t, checked against `expected` (a fresh state of this run's shape,
// rank and side: galore_state(rows, cols, config)).
GaloreState read_galore_state(StateReader& in, const TensorSlot& t, const GaloreState& expected);
// Every tensor named in meta["adam.steps"] is one of handled_adam and every one in meta["galore"]
// one of handled_galore (the tensors whose state this run read); else an error naming the first
// stray one.
void check_optimizer_state_names(const StateReader& in, const std::vector<std::string>& handled_adam,
                                 const std::vector<std::string>& handled_galore);

}  // namespace owlore
