#include "optim/state_pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/error.h"
#include "model/layout.h"

namespace owlore {

namespace {

constexpr int64_t kAlign = 256;  // cudaMalloc alignment: every entry can be a kernel's base pointer

int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// One slot's entries for one layer's tensors, packed in layout order.
SlotPlan plan_for_layer(const ModelLayout& layout, int layer, SlotMethod method, int rank, MomentsDtype moments) {
  SlotPlan plan;
  plan.method = method, plan.rank = rank, plan.moments = moments;
  int64_t offset = 0;
  auto add = [&](const std::string& tensor, const char* role, int64_t rows, int64_t cols, int elem_bytes, bool bf16) {
    SlotEntry e;
    e.tensor = tensor, e.role = role, e.rows = rows, e.cols = cols, e.elem_bytes = elem_bytes, e.is_bf16 = bf16;
    e.offset = offset;
    offset = align_up(offset + e.bytes());
    plan.entries.push_back(e);
  };
  const bool bf16 = moments == MomentsDtype::bf16;
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  for (const TensorSlot& t : layout.tensors) {
    if (t.layer != layer) continue;
    const std::string name = t.name.substr(prefix.size());
    if (method == SlotMethod::owlore && t.is_matrix()) {
      // GaLore on the smaller side (DESIGN.md §1): right (m ≥ n) Q r×n, R m×r; left P m×r, R r×n.
      const int64_t r = std::min<int64_t>({rank, t.rows, t.cols});
      const bool right = t.rows >= t.cols;
      add(name, "projector", right ? r : t.rows, right ? t.cols : r, 4, false);
      add(name, "exp_avg", right ? t.rows : r, right ? r : t.cols, 4, false);
      add(name, "exp_avg_sq", right ? t.rows : r, right ? r : t.cols, 4, false);
    } else {
      add(name, "exp_avg", t.rows, t.cols, bf16 ? 2 : 4, bf16);
      add(name, "exp_avg_sq", t.rows, t.cols, bf16 ? 2 : 4, bf16);
    }
    add(name, "step", 1, 1, 4, false);
  }
  plan.bytes_per_slot = offset;
  return plan;
}

}  // namespace

SlotMethod parse_slot_method(const std::string& name) {
  if (name == "lisa") return SlotMethod::lisa;
  if (name == "ows") return SlotMethod::ows;
  if (name == "owlore") return SlotMethod::owlore;
  fail("state pool: method '", name, "' has no layer slots; expected lisa, ows or owlore");
}

MomentsDtype parse_moments_dtype(const std::string& name) {
  if (name == "fp32") return MomentsDtype::fp32;
  if (name == "bf16") return MomentsDtype::bf16;
  fail("moments dtype '", name, "': expected fp32 or bf16");
}

StatePolicy parse_state_policy(const std::string& name) {
  if (name == "drop") return StatePolicy::drop;
  if (name == "keep") return StatePolicy::keep;
  if (name == "reset") return StatePolicy::reset;
  fail("state policy '", name, "': expected drop, keep or reset");
}

const char* state_policy_name(StatePolicy policy) {
  switch (policy) {
    case StatePolicy::drop: return "drop";
    case StatePolicy::keep: return "keep";
    case StatePolicy::reset: return "reset";
  }
  return "?";
}

const SlotEntry& SlotPlan::find(const std::string& tensor, const std::string& role) const {
  for (const SlotEntry& e : entries)
    if (e.tensor == tensor && e.role == role) return e;
  fail("slot plan: no entry '", role, "' for tensor '", tensor, "'");
}

SlotPlan slot_plan(const ModelConfig& config, SlotMethod method, int rank, MomentsDtype moments) {
  config.validate();
  OWLORE_REQUIRE(method != SlotMethod::owlore || rank >= 1, "slot plan: owlore needs a GaLore rank >= 1, got ", rank);
  const ModelLayout layout(config);
  // LLaMA layers are all alike, but the pool is sized for the largest so that a model with
  // uneven layers would still fit every sampled layer in any slot.
  SlotPlan largest;
  for (int l = 0; l < config.n_layers; l++) {
    SlotPlan p = plan_for_layer(layout, l, method, rank, moments);
    if (l == 0 || p.bytes_per_slot > largest.bytes_per_slot) largest = std::move(p);
  }
  return largest;
}

void* HostStateMemory::allocate(int64_t bytes) {
  OWLORE_REQUIRE(bytes >= 0, "state memory: cannot allocate ", bytes, " bytes");
  void* p = std::aligned_alloc(kAlign, (size_t)align_up(std::max<int64_t>(bytes, 1)));
  OWLORE_REQUIRE(p != nullptr, "state memory: out of host memory allocating ", bytes, " bytes");
  allocations_++;
  live_bytes_ += bytes;
  blocks_.emplace_back(p, bytes);
  return p;
}

void HostStateMemory::release(void* p) {
  for (size_t i = 0; i < blocks_.size(); i++)
    if (blocks_[i].first == p) {
      live_bytes_ -= blocks_[i].second;
      blocks_.erase(blocks_.begin() + i);
      std::free(p);
      return;
    }
  fail("state memory: release of a pointer this allocator did not hand out");
}

void HostStateMemory::zero(void* p, int64_t bytes) { std::memset(p, 0, (size_t)bytes); }
void HostStateMemory::copy_to_host(void* dst, const void* src, int64_t bytes) { std::memcpy(dst, src, (size_t)bytes); }
void HostStateMemory::copy_from_host(void* dst, const void* src, int64_t bytes) { std::memcpy(dst, src, (size_t)bytes); }

StatePool::StatePool(SlotPlan plan, int n_slots, int n_layers, StatePolicy policy, StateMemory& memory)
    : plan_(std::move(plan)), policy_(policy), memory_(memory) {
  OWLORE_REQUIRE(n_slots >= 1 && n_slots <= n_layers, "state pool: expected 1 <= slots (gamma) <= ", n_layers,
                 " layers, got ", n_slots);
  OWLORE_REQUIRE(plan_.bytes_per_slot > 0, "state pool: the slot plan is empty");
  slot_layer_.assign(n_slots, -1);  // first: arena_bytes() counts the slots
  arena_ = static_cast<uint8_t*>(memory_.allocate(arena_bytes()));
  memory_.zero(arena_, arena_bytes());
  layer_slot_.assign(n_layers, -1);
  kept_.resize(n_layers);
}

StatePool::~StatePool() {
  if (arena_) memory_.release(arena_);
}

Reassignment StatePool::reassign(const std::vector<int>& active_layers) {
  const int n_layers = (int)layer_slot_.size();
  OWLORE_REQUIRE((int)active_layers.size() <= n_slots(), "state pool: ", active_layers.size(),
                 " active layers do not fit in ", n_slots(), " slots");
  std::vector<bool> wanted(n_layers, false);
  for (int l : active_layers) {
    OWLORE_REQUIRE(l >= 0 && l < n_layers, "state pool: layer ", l, " outside [0, ", n_layers, ")");
    OWLORE_REQUIRE(!wanted[l], "state pool: layer ", l, " listed twice in the active set");
    wanted[l] = true;
  }
  Reassignment change;
  const int64_t slot_bytes = plan_.bytes_per_slot;
  // Leaving layers free their slots first, so entering layers can take them.
  for (int l = 0; l < n_layers; l++) {
    const int slot = layer_slot_[l];
    if (slot < 0) continue;
    if (wanted[l]) {
      change.stayed.push_back(l);
      continue;
    }
    change.left.push_back(l);
    if (policy_ == StatePolicy::keep) {
      // Host memory for kept state is the comparison mode's cost, outside the device arena.
      kept_[l].resize(slot_bytes);
      memory_.copy_to_host(kept_[l].data(), arena_ + slot * slot_bytes, slot_bytes);
    }
    slot_layer_[slot] = -1;
    layer_slot_[l] = -1;
  }
  int next_free = 0;
  for (int l = 0; l < n_layers; l++) {
    if (!wanted[l] || layer_slot_[l] >= 0) continue;
    while (slot_layer_[next_free] >= 0) next_free++;  // fits: |active| <= n_slots
    const int slot = next_free;
    slot_layer_[slot] = l;
    layer_slot_[l] = slot;
    change.entered.push_back(l);
    uint8_t* data = arena_ + slot * slot_bytes;
    if (policy_ == StatePolicy::keep && !kept_[l].empty()) {
      memory_.copy_from_host(data, kept_[l].data(), slot_bytes);
      change.restored.push_back(l);
    } else {
      memory_.zero(data, slot_bytes);
    }
  }
  if (policy_ == StatePolicy::reset)
    for (int l : change.stayed) memory_.zero(arena_ + layer_slot_[l] * slot_bytes, slot_bytes);
  return change;
}

int StatePool::slot_of(int layer) const {
  OWLORE_REQUIRE(layer >= 0 && layer < (int)layer_slot_.size(), "state pool: layer ", layer, " outside [0, ",
                 layer_slot_.size(), ")");
  return layer_slot_[layer];
}

int StatePool::layer_in_slot(int slot) const {
  OWLORE_REQUIRE(slot >= 0 && slot < n_slots(), "state pool: slot ", slot, " outside [0, ", n_slots(), ")");
  return slot_layer_[slot];
}

uint8_t* StatePool::slot_data(int slot) {
  OWLORE_REQUIRE(slot >= 0 && slot < n_slots(), "state pool: slot ", slot, " outside [0, ", n_slots(), ")");
  return arena_ + slot * plan_.bytes_per_slot;
}

uint8_t* StatePool::entry_data(int layer, const SlotEntry& e) {
  const int slot = slot_of(layer);
  OWLORE_REQUIRE(slot >= 0, "state pool: layer ", layer, " is not active (no slot) but its '", e.role, "' of '",
                 e.tensor, "' was requested");
  return slot_data(slot) + e.offset;
}

int64_t StatePool::host_kept_bytes() const {
  int64_t bytes = 0;
  for (const auto& k : kept_) bytes += (int64_t)k.size();
  return bytes;
}

}  // namespace owlore
