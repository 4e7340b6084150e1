// The active-set optimizer-state pool (DESIGN.md §2): γ slots, each sized at start for the
// largest decoder layer, allocated once as one arena. A sampled layer's optimizer state lives
// in a slot; on re-sampling, slots are reassigned in place — layers that stay keep their slot
// and state, entering layers take the freed slots — so nothing is allocated after the first
// step and peak memory does not move when the active set changes.
//
// What a slot holds (slot_plan):
//   lisa / ows : full-rank Adam moments (exp_avg, exp_avg_sq; fp32 or bf16) of every tensor of
//                the layer (7 matrices, 2 norms) and one int32 step counter per tensor.
//   owlore     : per matrix, GaLore state (DESIGN.md §1): the fp32 projector (Q r×n or P m×r),
//                fp32 moments of R's shape, an int32 step counter; full-rank moments (fp32 or
//                bf16) and a step counter for the 2 norms.
// All-zero bytes are a fresh state (moments 0, step 0; GaLore refreshes its projector at step
// 0), so starting a layer fresh is a memset.
//
// State policies when a layer leaves the active set:
//   drop  (default): its state is released; when it returns it starts fresh.
//   keep  : its slot is copied to host memory and copied back when it returns (for comparison
//           with the reference code, which never frees state).
//   reset : every re-sampling restarts all state, staying layers included (the LISA authors'
//           practice of restarting the optimizer each period).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace owlore {

enum class SlotMethod { lisa, ows, owlore };
enum class MomentsDtype { fp32, bf16 };
enum class StatePolicy { drop, keep, reset };

// Parse the command-line spellings ("lisa"/"ows"/"owlore", "fp32"/"bf16", "drop"/"keep"/"reset");
// errors name the flag value and the accepted ones.
SlotMethod parse_slot_method(const std::string& name);
MomentsDtype parse_moments_dtype(const std::string& name);
StatePolicy parse_state_policy(const std::string& name);
const char* state_policy_name(StatePolicy policy);

struct SlotEntry {
  std::string tensor;      // layer-relative Hugging Face name, e.g. "self_attn.q_proj.weight"
  std::string role;        // "exp_avg", "exp_avg_sq", "projector", "step"
  int64_t offset = 0;      // bytes from the start of the slot, 256-aligned
  int64_t rows = 0, cols = 0;
  int elem_bytes = 4;      // 4 fp32 / int32, 2 bf16
  bool is_bf16 = false;
  int64_t bytes() const { return rows * cols * elem_bytes; }
};

struct SlotPlan {
  SlotMethod method = SlotMethod::lisa;
  int rank = 0;                   // requested GaLore rank (owlore), clamped per matrix in the entries
  MomentsDtype moments = MomentsDtype::fp32;
  std::vector<SlotEntry> entries;  // in slot order, non-overlapping
  int64_t bytes_per_slot = 0;      // multiple of 256
  // The entry for (tensor, role); throws naming both if absent.
  const SlotEntry& find(const std::string& tensor, const std::string& role) const;
};

// The plan of one slot, sized for the largest decoder layer of the model.
SlotPlan slot_plan(const ModelConfig& config, SlotMethod method, int rank, MomentsDtype moments);

// Where the pool's arena comes from and how bytes move: host memory here; the GPU runtime
// supplies cudaMalloc / cudaMemcpy / cudaMemset. Counts allocations so tests (and the runtime's
// memory report) can assert that re-sampling allocates nothing.
class StateMemory {
 public:
  virtual ~StateMemory() = default;
  virtual void* allocate(int64_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void zero(void* p, int64_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, int64_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, int64_t bytes) = 0;
  int64_t allocations() const { return allocations_; }
  int64_t live_bytes() const { return live_bytes_; }

 protected:
  int64_t allocations_ = 0, live_bytes_ = 0;
};

class HostStateMemory : public StateMemory {
 public:
  void* allocate(int64_t bytes) override;
  void release(void* p) override;
  void zero(void* p, int64_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, int64_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, int64_t bytes) override;

 private:
  std::vector<std::pair<void*, int64_t>> blocks_;
};

// What one reassign did, for logs and for the trainer (entering layers need their weights'
// optimizer views rebuilt; fresh ones refresh their GaLore projectors at their first step).
struct Reassignment {
  std::vector<int> stayed, entered, left;  // layers, ascending
  std::vector<int> restored;               // entering layers whose kept state came back (keep)
};

class StatePool {
 public:
  // Allocates the arena (n_slots × plan.bytes_per_slot) once, zeroed.
  StatePool(SlotPlan plan, int n_slots, int n_layers, StatePolicy policy, StateMemory& memory);
  ~StatePool();
  StatePool(const StatePool&) = delete;
  StatePool& operator=(const StatePool&) = delete;

  // Makes `active_layers` (distinct, at most n_slots) the layers with a slot.
  Reassignment reassign(const std::vector<int>& active_layers);

  int slot_of(int layer) const;       // -1 when the layer has no slot
  int layer_in_slot(int slot) const;  // -1 when the slot is free
  uint8_t* slot_data(int slot);       // plan.bytes_per_slot bytes
  // The bytes of entry `e` of an active layer's state; throws naming the layer if it has no slot.
  uint8_t* entry_data(int layer, const SlotEntry& e);

  const SlotPlan& plan() const { return plan_; }
  int n_slots() const { return (int)slot_layer_.size(); }
  StatePolicy policy() const { return policy_; }
  int64_t arena_bytes() const { return plan_.bytes_per_slot * n_slots(); }
  int64_t host_kept_bytes() const;    // keep policy: host copies held for inactive layers

 private:
  SlotPlan plan_;
  StatePolicy policy_;
  StateMemory& memory_;
  uint8_t* arena_ = nullptr;
  std::vector<int> slot_layer_;                 // per slot
  std::vector<int> layer_slot_;                 // per layer
  std::vector<std::vector<uint8_t>> kept_;      // per layer, keep policy; empty when nothing kept
};

}  // namespace owlore
