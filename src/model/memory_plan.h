// The GPU memory plan (DESIGN.md §2): a table of named buffers, grouped into arenas by
// lifetime, that is both printed before step 1 and allocated from — one cudaMalloc per arena,
// at start, never again. A run that will not fit is refused with the number it needs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace owlore {

enum class Arena { Weights, OptimizerState, Gradients, Activations, Workspace };
const char* arena_name(Arena arena);

class MemoryPlan {
 public:
  // Registers a buffer; returns its index. Sizes are rounded up to 256 bytes (alignment).
  int add(Arena arena, const std::string& name, size_t bytes, const std::string& dtype);
  // Allocates every arena (throws naming the total needed and the free memory if it does not
  // fit) and resolves the pointers. Call once.
  void allocate();
  void* ptr(int index) const;
  template <typename T>
  T* as(int index) const { return static_cast<T*>(ptr(index)); }
  size_t bytes(Arena arena) const;
  void* base(Arena arena) const;  // the arena's first byte (nullptr when it holds nothing)
  size_t total_bytes() const;
  // The table: one line per buffer, subtotals per arena, the total, and the card's free memory.
  std::string table() const;
  ~MemoryPlan();
  MemoryPlan() = default;
  MemoryPlan(const MemoryPlan&) = delete;
  MemoryPlan& operator=(const MemoryPlan&) = delete;

 private:
  struct Entry {
    Arena arena;
    std::string name, dtype;
    size_t bytes, offset;
  };
  std::vector<Entry> entries_;
  std::vector<void*> arena_base_ = std::vector<void*>(5, nullptr);
  std::vector<size_t> arena_bytes_ = std::vector<size_t>(5, 0);
  bool allocated_ = false;
};

// Process-wide count of device allocations made through MemoryPlan (the pool proof: it must
// not move after the first step).
int64_t device_allocation_count();

}  // namespace owlore
