#include "base/format.h"
#include "model/memory_plan.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>

#include "base/error.h"

namespace owlore {

namespace {
std::atomic<int64_t> g_allocations{0};
constexpr size_t kAlign = 256;
}  // namespace

int64_t device_allocation_count() { return g_allocations.load(); }

const char* arena_name(Arena arena) {
  switch (arena) {
    case Arena::Weights: return "weights";
    case Arena::OptimizerState: return "optimizer state";
    case Arena::Gradients: return "gradients";
    case Arena::Activations: return "activations";
    case Arena::Workspace: return "workspace";
  }
  return "?";
}


int MemoryPlan::add(Arena arena, const std::string& name, size_t bytes, const std::string& dtype) {
  OWLORE_REQUIRE(!allocated_, "memory plan: '", name, "' added after allocation");
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  entries_.push_back(Entry{arena, name, dtype, rounded, arena_bytes_[(int)arena]});
  arena_bytes_[(int)arena] += rounded;
  return (int)entries_.size() - 1;
}

void MemoryPlan::allocate() {
  OWLORE_REQUIRE(!allocated_, "memory plan allocated twice");
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) fail("cannot query GPU memory (is a CUDA device present?)");
  // Leave room for the CUDA context's own growth, cuBLASLt and cuSOLVER handles.
  const size_t reserve = 256u << 20;
  if (total_bytes() + reserve > free_bytes)
    fail("this run needs ", format_bytes((double)total_bytes()), " of GPU memory (+", format_bytes(reserve),
         " reserve) but the card has ", format_bytes((double)free_bytes),
         " free; lower --batch or --seq, raise --grad-accum, or use a lower --recompute level / fewer trained layers");
  for (int a = 0; a < 5; a++) {
    if (arena_bytes_[a] == 0) continue;
    const cudaError_t err = cudaMalloc(&arena_base_[a], arena_bytes_[a]);
    if (err != cudaSuccess)
      fail("cudaMalloc of the ", arena_name((Arena)a), " arena (", format_bytes((double)arena_bytes_[a]),
           ") failed: ", cudaGetErrorString(err));
    g_allocations++;
  }
  allocated_ = true;
}

void* MemoryPlan::ptr(int index) const {
  OWLORE_REQUIRE(allocated_, "memory plan: pointer requested before allocation");
  const Entry& e = entries_.at(index);
  return static_cast<char*>(arena_base_[(int)e.arena]) + e.offset;
}

size_t MemoryPlan::bytes(Arena arena) const { return arena_bytes_[(int)arena]; }

void* MemoryPlan::base(Arena arena) const {
  OWLORE_REQUIRE(allocated_, "memory plan: pointer requested before allocation");
  return arena_base_[(int)arena];
}

size_t MemoryPlan::total_bytes() const {
  size_t sum = 0;
  for (size_t b : arena_bytes_) sum += b;
  return sum;
}

std::string MemoryPlan::table() const {
  std::string out = "memory plan:\n";
  char line[256];
  for (int a = 0; a < 5; a++) {
    if (arena_bytes_[a] == 0) continue;
    std::snprintf(line, sizeof line, "  %-16s %12s\n", arena_name((Arena)a), format_bytes((double)arena_bytes_[a]).c_str());
    out += line;
    for (const Entry& e : entries_)
      if ((int)e.arena == a) {
        std::snprintf(line, sizeof line, "    %-30s %12s  %s\n", e.name.c_str(), format_bytes((double)e.bytes).c_str(),
                      e.dtype.c_str());
        out += line;
      }
  }
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  std::snprintf(line, sizeof line, "  %-16s %12s  (card: %s free of %s)\n", "total", format_bytes((double)total_bytes()).c_str(),
                format_bytes((double)free_bytes).c_str(), format_bytes((double)total).c_str());
  out += line;
  return out;
}

MemoryPlan::~MemoryPlan() {
  for (void* p : arena_base_)
    if (p) cudaFree(p);
}

}  // namespace owlore
