#include "optim/optimizer_state.h"

#include <algorithm>
#include <limits>

#include "base/error.h"

namespace owlore {

namespace {
constexpr int64_t kMaxStep = std::numeric_limits<int>::max();
JsonFields adam_steps(const StateReader& in) { return in.meta().object("adam.steps"); }
JsonFields galore_meta(const StateReader& in) { return in.meta().object("galore"); }
}  // namespace

void begin_optimizer_state(StateBundle& out) {
  if (!out.meta.contains("adam.steps")) out.meta["adam.steps"] = nlohmann::json::object();
  if (!out.meta.contains("galore")) out.meta["galore"] = nlohmann::json::object();
}

void add_adam_state(StateBundle& out, const std::string& tensor, AdamTensorState state) {
  begin_optimizer_state(out);
  out.tensors["adam." + tensor + ".m"] = std::move(state.m);
  out.tensors["adam." + tensor + ".v"] = std::move(state.v);
  out.meta["adam.steps"][tensor] = state.step;
}

void add_galore_state(StateBundle& out, const std::string& tensor, const GaloreState& s) {
  begin_optimizer_state(out);
  out.tensors["galore." + tensor + ".projector"] = s.projector;
  out.tensors["galore." + tensor + ".m"] = s.m;
  out.tensors["galore." + tensor + ".v"] = s.v;
  out.meta["galore"][tensor] = {{"rows", s.rows},         {"cols", s.cols},
                                {"rank", s.rank},         {"right", s.side == ProjectionSide::right},
                                {"step", s.step},         {"refreshes", s.refreshes},
                                {"captured_energy", s.captured_energy}};
}

bool has_adam_state(const StateReader& in, const std::string& tensor) { return adam_steps(in).has(tensor); }
bool has_galore_state(const StateReader& in, const std::string& tensor) { return galore_meta(in).has(tensor); }

AdamTensorState read_adam_state(StateReader& in, const TensorSlot& t) {
  AdamTensorState s;
  s.step = (int)adam_steps(in).integer(t.name, 0, kMaxStep);
  s.m = in.tensor("adam." + t.name + ".m", t.numel());
  s.v = in.tensor("adam." + t.name + ".v", t.numel());
  for (float x : s.v)
    OWLORE_REQUIRE(x >= 0.0f, in.source(), ": tensor 'adam.", t.name, ".v' holds a negative second moment");
  return s;
}

GaloreState read_galore_state(StateReader& in, const TensorSlot& t, const GaloreState& expected) {
  const JsonFields j = galore_meta(in).object(t.name);
  GaloreState s = expected;
  const int64_t rows = j.integer("rows", 0, kMaxStep), cols = j.integer("cols", 0, kMaxStep);
  OWLORE_REQUIRE(rows == expected.rows && cols == expected.cols, j.where(), ": the GaLore state is for a ", rows, " x ",
                 cols, " matrix, this run's ", t.name, " is ", expected.rows, " x ", expected.cols);
  const int64_t rank = j.integer("rank", 0, kMaxStep);
  OWLORE_REQUIRE(rank == expected.rank, j.where(), ": rank ", rank, ", this run projects ", t.name, " at rank ",
                 expected.rank, " (--rank, clamped to the matrix)");
  const bool right = j.boolean("right");
  OWLORE_REQUIRE(right == (expected.side == ProjectionSide::right), j.where(), ": projection on the ",
                 right ? "right" : "left", ", but a ", rows, " x ", cols, " matrix projects on its smaller side, the ",
                 expected.side == ProjectionSide::right ? "right" : "left");
  s.step = (int)j.integer("step", 0, kMaxStep);
  s.refreshes = (int)j.integer("refreshes", 0, (int64_t)s.step + 1);
  s.captured_energy = j.number("captured_energy", 0.0, 1.01);  // a ratio of squared norms (rounding above 1)
  const int64_t projector_numel = (int64_t)s.rank * (right ? s.cols : s.rows);
  s.projector = in.tensor_or_empty("galore." + t.name + ".projector", projector_numel);
  OWLORE_REQUIRE(!s.projector.empty() || (s.step == 0 && s.refreshes == 0), j.where(), ": ", s.step,
                 " steps and ", s.refreshes, " refreshes, but no projector");
  OWLORE_REQUIRE(s.projector.empty() || s.refreshes > 0, j.where(), ": a projector but no refresh made it");
  s.m = in.tensor("galore." + t.name + ".m", s.r_numel());
  s.v = in.tensor("galore." + t.name + ".v", s.r_numel());
  for (float x : s.v)
    OWLORE_REQUIRE(x >= 0.0f, in.source(), ": tensor 'galore.", t.name, ".v' holds a negative second moment");
  return s;
}

void check_optimizer_state_names(const StateReader& in, const std::vector<std::string>& handled_adam,
                                 const std::vector<std::string>& handled_galore) {
  for (const bool galore : {false, true}) {
    const JsonFields names = galore ? galore_meta(in) : adam_steps(in);
    const std::vector<std::string>& handled = galore ? handled_galore : handled_adam;
    for (const std::string& name : names.keys())
      OWLORE_REQUIRE(std::find(handled.begin(), handled.end(), name) != handled.end(), names.path(name),
                     ": optimizer state for '", name,
                     "', which this run does not train (not a tensor of this model, or the wrong method, mask or "
                     "--state for it)");
  }
}

}  // namespace owlore
