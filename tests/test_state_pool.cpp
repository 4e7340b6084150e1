// Active-set state pool (DESIGN.md §2): the slot plan's bytes and sub-offsets; over many
// re-samplings no two layers share a slot, staying layers keep slot and state, keep restores the
// exact bytes, drop and reset start fresh, and the arena is allocated exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "base/error.h"
#include "optim/sampler.h"
#include "optim/state_pool.h"

namespace owlore {
namespace {

struct Shape {
  std::string tensor;
  int64_t rows, cols;
};
std::vector<Shape> layer_shapes(const ModelConfig& c) {
  return {{"input_layernorm.weight", 1, c.d_model},        {"self_attn.q_proj.weight", c.q_dim(), c.d_model},
          {"self_attn.k_proj.weight", c.kv_dim(), c.d_model}, {"self_attn.v_proj.weight", c.kv_dim(), c.d_model},
          {"self_attn.o_proj.weight", c.d_model, c.q_dim()}, {"post_attention_layernorm.weight", 1, c.d_model},
          {"mlp.gate_proj.weight", c.ffn, c.d_model},        {"mlp.up_proj.weight", c.ffn, c.d_model},
          {"mlp.down_proj.weight", c.d_model, c.ffn}};
}

void check_packing(const SlotPlan& plan) {
  int64_t end = 0;
  for (const SlotEntry& e : plan.entries) {
    EXPECT_EQ(e.offset % 256, 0) << e.tensor << " " << e.role;
    EXPECT_GE(e.offset, end) << e.tensor << " " << e.role << " overlaps the previous entry";
    end = e.offset + e.bytes();
  }
  EXPECT_LE(end, plan.bytes_per_slot);
  EXPECT_EQ(plan.bytes_per_slot % 256, 0);
}

TEST(StatePool, FullRankSlotPlan) {
  const ModelConfig c = preset_config("tiny");
  for (MomentsDtype dtype : {MomentsDtype::fp32, MomentsDtype::bf16}) {
    const SlotPlan plan = slot_plan(c, SlotMethod::ows, 0, dtype);
    check_packing(plan);
    const int elem = dtype == MomentsDtype::bf16 ? 2 : 4;
    int64_t payload = 0;
    for (const Shape& s : layer_shapes(c)) {
      for (const char* role : {"exp_avg", "exp_avg_sq"}) {
        const SlotEntry& e = plan.find(s.tensor, role);
        EXPECT_EQ(e.rows, s.rows);
        EXPECT_EQ(e.cols, s.cols);
        EXPECT_EQ(e.elem_bytes, elem);
        payload += e.bytes();
      }
      EXPECT_EQ(plan.find(s.tensor, "step").bytes(), 4);
      payload += 4;
    }
    EXPECT_EQ(payload, 2 * elem * c.layer_params() + 9 * 4);
    EXPECT_LT(plan.bytes_per_slot, payload + 256 * (int64_t)plan.entries.size());
    EXPECT_EQ(slot_plan(c, SlotMethod::lisa, 0, dtype).bytes_per_slot, plan.bytes_per_slot);
  }
  EXPECT_THROW(slot_plan(c, SlotMethod::ows, 0, MomentsDtype::fp32).find("mlp.up_proj.weight", "projector"),
               Error);
}

TEST(StatePool, OwloreSlotPlan) {
  const ModelConfig c = preset_config("tiny");  // C 45, q_dim 90, kv_dim 30, ffn 71
  const int rank = 32;
  const SlotPlan plan = slot_plan(c, SlotMethod::owlore, rank, MomentsDtype::bf16);
  check_packing(plan);
  int64_t payload = 0;
  for (const Shape& s : layer_shapes(c)) {
    if (s.rows == 1) {  // norms: full-rank moments in the moments dtype
      EXPECT_EQ(plan.find(s.tensor, "exp_avg").bytes(), 2 * s.cols);
      payload += 4 * s.cols;
    } else {
      const int64_t r = std::min<int64_t>({rank, s.rows, s.cols});
      const bool right = s.rows >= s.cols;
      const SlotEntry& p = plan.find(s.tensor, "projector");
      const SlotEntry& m = plan.find(s.tensor, "exp_avg");
      EXPECT_EQ(p.rows, right ? r : s.rows) << s.tensor;
      EXPECT_EQ(p.cols, right ? s.cols : r) << s.tensor;
      EXPECT_EQ(m.rows, right ? s.rows : r) << s.tensor;
      EXPECT_EQ(m.cols, right ? r : s.cols) << s.tensor;
      EXPECT_EQ(m.elem_bytes, 4) << "GaLore moments are fp32 (DESIGN.md §1)";
      payload += 4 * (p.rows * p.cols + 2 * m.rows * m.cols);
    }
    payload += 4;  // step
  }
  // k_proj and v_proj (30×45) are left-projected with the rank clamped to 30: P 30×30, R 30×45.
  EXPECT_EQ(plan.find("self_attn.k_proj.weight", "projector").cols, 30);
  EXPECT_LT(plan.bytes_per_slot, payload + 256 * (int64_t)plan.entries.size());
  EXPECT_GE(plan.bytes_per_slot, payload);

  // The presets' real numbers, printed for the memory plan discussion.
  for (const char* name : {"smollm2-135m", "llama2-7b", "llama3-8b"}) {
    const ModelConfig p = preset_config(name);
    const double mib = 1024.0 * 1024.0;
    std::printf("%-13s slot bytes: ows fp32 %.1f MiB, ows bf16 %.1f MiB, owlore r=256 %.1f MiB\n", name,
                slot_plan(p, SlotMethod::ows, 0, MomentsDtype::fp32).bytes_per_slot / mib,
                slot_plan(p, SlotMethod::ows, 0, MomentsDtype::bf16).bytes_per_slot / mib,
                slot_plan(p, SlotMethod::owlore, 256, MomentsDtype::fp32).bytes_per_slot / mib);
  }
}

// Fills a layer's slot with bytes unique to (layer, period), standing in for optimizer state.
void stamp(StatePool& pool, int layer, int period) {
  uint8_t* data = pool.slot_data(pool.slot_of(layer));
  for (int64_t i = 0; i < pool.plan().bytes_per_slot; i++) data[i] = (uint8_t)(1 + (layer * 131 + period * 17 + i) % 251);
}
bool has_stamp(StatePool& pool, int layer, int period) {
  const uint8_t* data = pool.slot_data(pool.slot_of(layer));
  for (int64_t i = 0; i < pool.plan().bytes_per_slot; i++)
    if (data[i] != (uint8_t)(1 + (layer * 131 + period * 17 + i) % 251)) return false;
  return true;
}
bool all_zero(StatePool& pool, int layer) {
  const uint8_t* data = pool.slot_data(pool.slot_of(layer));
  return std::all_of(data, data + pool.plan().bytes_per_slot, [](uint8_t b) { return b == 0; });
}

void run_periods(StatePolicy policy) {
  const ModelConfig c = preset_config("tiny");
  const int L = 12, gamma = 4, periods = 300;
  HostStateMemory memory;
  StatePool pool(slot_plan(c, SlotMethod::owlore, 16, MomentsDtype::fp32), gamma, L, policy, memory);
  EXPECT_EQ(memory.allocations(), 1);
  EXPECT_EQ(memory.live_bytes(), pool.arena_bytes());
  std::vector<double> weights(L);
  for (int l = 0; l < L; l++) weights[l] = 1.0 + l % 5;  // non-uniform, so layers often stay
  LayerSampler sampler = LayerSampler::weighted(weights, gamma, 1, 2024);
  std::map<int, int> last_stamp;  // layer -> period of the stamp it carried when it left
  std::vector<int> previous;
  std::map<int, int> previous_slot;
  int stays = 0, restores = 0;
  for (int period = 0; period < periods; period++) {
    const std::vector<int> active = sampler.sample(period + 1);
    const Reassignment change = pool.reassign(active);
    // Slots: every active layer has one, distinct, and the inverse map agrees.
    std::set<int> slots;
    for (int l : active) {
      const int slot = pool.slot_of(l);
      ASSERT_GE(slot, 0) << "layer " << l << " active without a slot";
      ASSERT_TRUE(slots.insert(slot).second) << "two layers share slot " << slot;
      ASSERT_EQ(pool.layer_in_slot(slot), l);
    }
    for (int l = 0; l < L; l++)
      if (!std::count(active.begin(), active.end(), l)) {
        ASSERT_EQ(pool.slot_of(l), -1);
      }
    // Stayers keep slot and (except under reset) state; entering layers are fresh or restored.
    for (int l : change.stayed) {
      stays++;
      ASSERT_TRUE(std::count(previous.begin(), previous.end(), l));
      EXPECT_EQ(pool.slot_of(l), previous_slot[l]) << "staying layer " << l << " moved";
      if (policy == StatePolicy::reset) {
        EXPECT_TRUE(all_zero(pool, l)) << "reset must restart staying layer " << l;
      } else {
        EXPECT_TRUE(has_stamp(pool, l, period - 1)) << "staying layer " << l << " lost its state";
      }
    }
    for (int l : change.left) last_stamp[l] = period - 1;
    for (int l : change.entered) {
      const bool kept = policy == StatePolicy::keep && last_stamp.count(l);
      if (kept) {
        restores++;
        EXPECT_TRUE(has_stamp(pool, l, last_stamp[l])) << "keep did not restore layer " << l << " exactly";
        EXPECT_TRUE(std::count(change.restored.begin(), change.restored.end(), l));
      } else {
        EXPECT_TRUE(all_zero(pool, l)) << "layer " << l << " should start fresh under " << state_policy_name(policy);
      }
    }
    for (int l : active) stamp(pool, l, period);
    previous = active;
    for (int l : active) previous_slot[l] = pool.slot_of(l);
    ASSERT_EQ(memory.allocations(), 1) << "allocation after the first step, period " << period;
  }
  EXPECT_GT(stays, periods / 2) << "the test should exercise staying layers";
  if (policy == StatePolicy::keep) {
    EXPECT_GT(restores, periods / 2);
  }
  EXPECT_EQ(memory.live_bytes(), pool.arena_bytes());
}

TEST(StatePool, DropPolicyOverManyPeriods) { run_periods(StatePolicy::drop); }
TEST(StatePool, KeepPolicyRestoresExactState) { run_periods(StatePolicy::keep); }
TEST(StatePool, ResetPolicyRestartsEverything) { run_periods(StatePolicy::reset); }

TEST(StatePool, EntryAccessAndErrors) {
  const ModelConfig c = preset_config("tiny");
  HostStateMemory memory;
  {
    StatePool pool(slot_plan(c, SlotMethod::lisa, 0, MomentsDtype::fp32), 2, c.n_layers, StatePolicy::drop, memory);
    pool.reassign({2, 0});
    const SlotEntry& e = pool.plan().find("mlp.down_proj.weight", "exp_avg");
    EXPECT_EQ(pool.entry_data(2, e), pool.slot_data(pool.slot_of(2)) + e.offset);
    EXPECT_THROW(pool.entry_data(1, e), Error);        // inactive layer
    EXPECT_THROW(pool.reassign({0, 1, 2}), Error);     // more layers than slots
    EXPECT_THROW(pool.reassign({1, 1}), Error);        // duplicate
    EXPECT_THROW(pool.reassign({3}), Error);           // outside the model
  }
  EXPECT_EQ(memory.live_bytes(), 0) << "the pool releases its arena";
  EXPECT_THROW(parse_state_policy("forget"), Error);
  EXPECT_THROW(parse_slot_method("full"), Error);
  EXPECT_EQ(parse_moments_dtype("bf16"), MomentsDtype::bf16);
}

}  // namespace
}  // namespace owlore
