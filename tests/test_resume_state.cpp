// --resume validates every field of trainer_state.safetensors against the run it continues: each
// damage below (the ones an adversarial run of 325 corrupt states found, and more) is one clear
// error naming the file and the tensor or key — never a crash, an out-of-bounds copy, a raw JSON
// exception or a silent loss of state — and random bit flips anywhere in the file either resume
// or fail with owlore::Error (a crash fails the test binary).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <functional>

#include "base/error.h"
#include "base/rng.h"
#include "io/checkpoint.h"
#include "train/trainer.h"

using namespace owlore;
namespace fs = std::filesystem;

namespace {

std::string shakespeare() { return std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt"; }

// A short CPU run of `method` that stops at step 4 with a checkpoint (sampled methods re-sample
// at steps 1 and 3; GaLore refreshes at 1 and 3).
TrainOptions run_of(const std::string& method, StatePolicy policy, const std::string& name) {
  TrainOptions o;
  o.device = Device::cpu;
  o.preset = "tiny";
  o.data_path = shakespeare();
  o.out_dir = (fs::temp_directory_path() / ("owlore_resume_state_" + name + "_" + std::to_string(getpid()))).string();
  fs::remove_all(o.out_dir);
  o.method = parse_choice(kMethodChoices, method, "--method");
  o.state_policy = policy;
  o.steps = 6, o.stop_at = 4;
  o.batch = 2, o.seq = 16;
  o.val_every = 0, o.val_batches = 1, o.log_every = 100;
  o.gamma = 1, o.period = 2;
  o.rank = 4, o.proj_gap = 2;
  o.outlier_samples = 4, o.outlier_seq = 16;
  return o;
}

struct Checkpoint {
  TrainOptions options;
  std::string state_path;
  StateBundle state;
};

Checkpoint make_checkpoint(const std::string& method, StatePolicy policy, const std::string& name) {
  Checkpoint c{run_of(method, policy, name), "", {}};
  run_training(c.options);
  c.state_path = c.options.out_dir + "/checkpoint/trainer_state.safetensors";
  c.state = load_state_bundle(c.state_path);
  c.options.stop_at = 0;
  c.options.resume_path = c.options.out_dir + "/checkpoint";
  c.options.save_final = false;  // every resume starts from this same checkpoint
  return c;
}

// Resumes from `state` written over the checkpoint's; returns the error message ("" if it ran).
std::string resume_with(const Checkpoint& c, const StateBundle& state) {
  save_state_bundle(c.state_path, state);
  try {
    run_training(c.options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string first_with_prefix(const StateBundle& s, const std::string& prefix) {
  for (const auto& [name, values] : s.tensors)
    if (name.rfind(prefix, 0) == 0) return name;
  return "";
}

struct Damage {
  std::string what;
  std::function<void(StateBundle&)> apply;
  std::string expected;  // a part of the message
};

void expect_each_damage_is_named(const Checkpoint& c, const std::vector<Damage>& damages) {
  for (const Damage& d : damages) {
    StateBundle s = c.state;
    d.apply(s);
    const std::string message = resume_with(c, s);
    EXPECT_NE(message, "") << d.what << ": resumed without a word";
    EXPECT_NE(message.find(d.expected), std::string::npos) << d.what << ": " << message;
    EXPECT_NE(message.find("trainer_state.safetensors"), std::string::npos)
        << d.what << ": the message does not name the file: " << message;
  }
  // The undamaged state still resumes.
  EXPECT_EQ(resume_with(c, c.state), "");
}

}  // namespace

TEST(ResumeState, GaloreStateIsCheckedAgainstTheRun) {
  const Checkpoint c = make_checkpoint("owlore", StatePolicy::drop, "owlore");
  const std::string galore_m = first_with_prefix(c.state, "galore.");
  ASSERT_FALSE(galore_m.empty());
  const std::string matrix = galore_m.substr(7, galore_m.rfind('.') - 7);  // galore.<name>.<part>
  std::vector<Damage> damages = {
      {"rank 4 -> 6", [&](StateBundle& s) { s.meta["galore"][matrix]["rank"] = 6; }, "rank 6"},
      {"rank as text", [&](StateBundle& s) { s.meta["galore"][matrix]["rank"] = "4"; }, ".rank: expected an integer"},
      {"rows", [&](StateBundle& s) { s.meta["galore"][matrix]["rows"] = 7; }, "matrix"},
      {"side", [&](StateBundle& s) { s.meta["galore"][matrix]["right"] = !s.meta["galore"][matrix]["right"].get<bool>(); },
       "projection on the"},
      {"moment of one element", [&](StateBundle& s) { s.tensors["galore." + matrix + ".m"] = {1.0f}; }, "has 1 values"},
      {"projector of the wrong size",
       [&](StateBundle& s) { s.tensors["galore." + matrix + ".projector"].pop_back(); }, ".projector' has"},
      {"NaN in v", [&](StateBundle& s) { s.tensors["galore." + matrix + ".v"][0] = NAN; }, "non-finite"},
      {"negative v", [&](StateBundle& s) { s.tensors["galore." + matrix + ".v"][0] = -1.0f; }, "negative second moment"},
      {"step -1", [&](StateBundle& s) { s.meta["galore"][matrix]["step"] = -1; }, ".step: -1 is outside"},
      {"refreshes past the steps", [&](StateBundle& s) { s.meta["galore"][matrix]["refreshes"] = 1000; }, "refreshes"},
      {"energy NaN text", [&](StateBundle& s) { s.meta["galore"][matrix]["captured_energy"] = "nan"; },
       "captured_energy: expected a number"},
      {"meta entry missing", [&](StateBundle& s) { s.meta["galore"].erase(matrix); }, "no GaLore state for"},
  };
  expect_each_damage_is_named(c, damages);
  fs::remove_all(c.options.out_dir);
}

TEST(ResumeState, AdamStateMaskCursorAndStepAreChecked) {
  const Checkpoint c = make_checkpoint("lisa", StatePolicy::drop, "lisa");
  const std::string adam = "model.embed_tokens.weight";
  ASSERT_TRUE(c.state.tensors.count("adam." + adam + ".m"));
  std::vector<Damage> damages = {
      {"moment of one element", [&](StateBundle& s) { s.tensors["adam." + adam + ".v"] = {0.5f}; }, "has 1 values"},
      {"a tensor renamed", [&](StateBundle& s) {
         s.tensors["adam." + adam + ".n"] = s.tensors["adam." + adam + ".m"];
         s.tensors.erase("adam." + adam + ".m");
       }, "is missing"},
      {"an unknown tensor", [&](StateBundle& s) { s.tensors["adam.model.layers.9.x.m"] = {1.0f}; }, "has no place for"},
      {"state for a layer that does not train", [&](StateBundle& s) {
         for (int l = 0; l < 3; l++)
           if (!s.meta["mask"]["layers"][l].get<bool>()) {
             const std::string t = "model.layers." + std::to_string(l) + ".mlp.up_proj.weight";
             s.meta["adam.steps"][t] = 1;
             s.tensors["adam." + t + ".m"] = s.tensors["adam." + t + ".v"] = std::vector<float>(71 * 45, 0.0f);
             return;
           }
       }, "which this run does not train"},
      {"adam step as a float", [&](StateBundle& s) { s.meta["adam.steps"][adam] = 2.5; }, "expected an integer"},
      {"mask.layers = []", [](StateBundle& s) { s.meta["mask"]["layers"] = nlohmann::json::array(); }, "mask.layers: 0 entries"},
      {"mask disagrees with the sampler", [](StateBundle& s) {
         auto layers = s.meta["mask"]["layers"];
         std::rotate(layers.begin(), layers.begin() + 1, layers.end());
         s.meta["mask"]["layers"] = layers;
       }, "the sampler's current sample"},
      {"mask.embedding as text", [](StateBundle& s) { s.meta["mask"]["embedding"] = "yes"; }, "expected true or false"},
      {"cursor_position = -1e12", [](StateBundle& s) { s.meta["cursor_position"] = -1e12; }, "cursor_position: expected an integer"},
      {"cursor_position = -1", [](StateBundle& s) { s.meta["cursor_position"] = -1; }, "cursor_position: -1 is outside"},
      {"cursor_position off by one", [](StateBundle& s) { s.meta["cursor_position"] = s.meta["cursor_position"].get<int64_t>() + 1; },
       "rows consume"},
      {"cursor_seed negative", [](StateBundle& s) { s.meta["cursor_seed"] = -3; }, "cursor_seed"},
      {"step 2^32 + 2", [](StateBundle& s) { s.meta["step"] = 4294967298ull; }, "step: 4294967298 is outside"},
      {"step missing", [](StateBundle& s) { s.meta.erase("step"); }, "missing key 'step'"},
      {"sampler current out of range", [](StateBundle& s) { s.meta["sampler"]["current"] = {7}; }, "sampler.current"},
      {"sampler rng_state text", [](StateBundle& s) { s.meta["sampler"]["rng_state"] = "12x"; }, "rng_state"},
      {"an unknown meta key", [](StateBundle& s) { s.meta["extra"] = 1; }, "meta.extra: unknown key"},
      {"weights of one element", [](StateBundle& s) { s.tensors["weights"] = {0.0f}; }, "'weights' has 1 values"},
      {"NaN weights", [](StateBundle& s) { s.tensors["weights"][3] = NAN; }, "non-finite"},
  };
  expect_each_damage_is_named(c, damages);
  fs::remove_all(c.options.out_dir);
}

TEST(ResumeState, KeptStateOfParkedLayersIsChecked) {
  const Checkpoint c = make_checkpoint("lisa", StatePolicy::keep, "keep");
  // The layer trained at steps 1-2 and parked since: its state is in the file though it does not train.
  int parked = -1;
  for (int l = 0; l < 3; l++)
    if (!c.state.meta["mask"]["layers"][l].get<bool>() &&
        c.state.meta["adam.steps"].contains("model.layers." + std::to_string(l) + ".mlp.up_proj.weight"))
      parked = l;
  ASSERT_GE(parked, 0) << "no parked layer in the checkpoint";
  const std::string t = "model.layers." + std::to_string(parked) + ".mlp.up_proj.weight";
  expect_each_damage_is_named(c, {{"a parked moment of one element", [&](StateBundle& s) { s.tensors["adam." + t + ".m"] = {1.0f}; },
                                   "has 1 values"},
                                  {"a parked step of -5", [&](StateBundle& s) { s.meta["adam.steps"][t] = -5; }, "-5 is outside"}});
  fs::remove_all(c.options.out_dir);
}

TEST(ResumeState, RandomBitFlipsResumeOrFailCleanly) {
  const Checkpoint c = make_checkpoint("owlore", StatePolicy::drop, "flips");
  save_state_bundle(c.state_path, c.state);
  std::ifstream in(c.state_path, std::ios::binary);
  const std::string clean((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  uint64_t header = 0;
  std::memcpy(&header, clean.data(), 8);
  Rng rng(7);
  int failed = 0, resumed = 0;
  for (int trial = 0; trial < 120; trial++) {
    std::string damaged = clean;
    // Most flips in the header (JSON metadata, tensor table), where the structure lives.
    const uint64_t span = trial % 4 == 3 ? damaged.size() : 8 + header;
    const uint64_t byte = rng.next_u64() % span;
    damaged[byte] = (char)(damaged[byte] ^ (1 << (rng.next_u64() % 8)));
    std::ofstream(c.state_path, std::ios::binary | std::ios::trunc) << damaged;
    try {
      run_training(c.options);
      resumed++;
    } catch (const Error& e) {
      failed++;
      // Refused at load (naming the file), or a flipped weight made training itself fail its
      // checks ("step N: ... not finite / collapsed"): both are clean stops.
      const std::string message = e.what();
      EXPECT_TRUE(message.find("trainer_state.safetensors") != std::string::npos || message.rfind("step ", 0) == 0)
          << "flip at byte " << byte << ": " << message;
    }
  }
  EXPECT_GT(failed, 0);
  std::printf("bit flips: %d resumed, %d refused with a message\n", resumed, failed);
  fs::remove_all(c.options.out_dir);
}
