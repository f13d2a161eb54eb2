#include "slimbert/train/state.h"

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"

namespace slimbert {

using json = nlohmann::json;

json trainer_state_json(const TrainerCursor& cursor, const RunSignature& run, const json& extra) {
  json state = extra.is_object() ? extra : json::object();
  state[kSchemaVersionKey] = kTrainerStateVersion;
  state["step"] = cursor.step;
  state["epoch"] = cursor.epoch;
  state["offset"] = cursor.offset;
  state["run"] = {
      {"command", run.command}, {"defining", run.defining}, {"adjustable", run.adjustable}};
  return state;
}

namespace {

// "seed 0 -> 1" for each option of `now` whose value differs in `saved` (absent counts as
// differing only when `missing_differs`).
std::vector<std::string> changes(const json& saved, const json& now, bool missing_differs) {
  std::vector<std::string> out;
  for (auto it = now.begin(); it != now.end(); ++it) {
    auto s = saved.find(it.key());
    if (s == saved.end()) {
      if (missing_differs) out.push_back(it.key() + " (not recorded) -> " + json_text(*it));
    } else if (*s != *it) {
      out.push_back(it.key() + " " + json_text(*s) + " -> " + json_text(*it));
    }
  }
  return out;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

}  // namespace

TrainerCursor read_trainer_state(const json& state, const RunSignature& run,
                                 const StateLimits& limits, const std::string& where,
                                 std::vector<std::string>* notes) {
  check_schema_version(state, where, kTrainerStateVersion);
  const JsonFields f(state, where);
  if (f.has("run")) {
    const JsonFields r(f.at("run"), where + ": field 'run'");
    const std::string command = r.string("command");
    if (command != run.command)
      fail(where, ": this checkpoint was written by '", command, "', not by '", run.command,
           "'; resume it with that command, or write this run to another --out");
    const json& defining = r.at("defining");
    const json& adjustable = r.at("adjustable");
    if (!defining.is_object()) r.bad("defining", "an object of options");
    if (!adjustable.is_object()) r.bad("adjustable", "an object of options");
    const auto changed = changes(defining, run.defining, true);
    if (!changed.empty())
      fail(where, ": the run was started with other options than this one (", joined(changed),
           "); resume with the options it was started with, or write this run to another --out");
    const auto adjusted = changes(adjustable, run.adjustable, false);
    if (notes && !adjusted.empty())
      notes->push_back("resumed with changed options: " + joined(adjusted));
  } else if (notes) {
    notes->push_back(
        "the checkpoint predates recorded run options: seed, batch size and steps "
        "are not checked against it");
  }
  TrainerCursor c;
  c.step = f.integer("step", 0, limits.total_steps);
  c.epoch = f.integer("epoch", 0, limits.max_epoch);
  c.offset = f.integer("offset", 0, limits.max_offset);
  return c;
}

}  // namespace slimbert
