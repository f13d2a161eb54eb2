// The trainer's part of a training checkpoint (trainer_state/state.json): where the run stands
// and what run it is. A resume reads it back only after checking every field: a corrupted or
// foreign state is refused with a message naming the file and the field, never trained on.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace slimbert {

// How an option takes part in --resume: a defining option fixes the data order, the schedule or
// the model, so a resume that changes it is refused; an adjustable one may change (reported).
enum class OnResume { kDefining, kAdjustable };

// What makes two runs the same run.
struct RunSignature {
  std::string command;  // "pretrain", "wid", "finetune spam", "dynabert width", ...
  // Options that fix the data order, the schedule or the model: a resume that changes one is
  // refused (its result would be neither the old run nor a new one).
  nlohmann::json defining = nlohmann::json::object();
  // Options a resume may change (learning rate, clipping, ...): the change is reported.
  nlohmann::json adjustable = nlohmann::json::object();

  // Records option `name`: the options structs declare theirs with it (their sign()), once.
  void add(const std::string& name, const nlohmann::json& value, OnResume role) {
    (role == OnResume::kDefining ? defining : adjustable)[name] = value;
  }
  // The options every training command has (the seed, the batch, the schedule), signed alike.
  template <typename Options>
  void add_common(const Options& o) {
    add("seed", o.seed, OnResume::kDefining);
    add("batch_size", o.batch_size, OnResume::kDefining);
    add("lr", o.lr, OnResume::kAdjustable);
    add("weight_decay", o.weight_decay, OnResume::kAdjustable);
    add("warmup_fraction", o.warmup_fraction, OnResume::kAdjustable);
    add("clip", o.clip, OnResume::kAdjustable);
  }
};

struct TrainerCursor {
  int64_t step = 0;    // optimizer steps done
  int64_t epoch = 0;   // data epoch the next batch comes from
  int64_t offset = 0;  // position in that epoch's order
};

// The bounds a state must respect to be resumable by this run.
struct StateLimits {
  int64_t total_steps = 0;  // step <= total_steps
  int64_t max_epoch = 0;    // epoch <= max_epoch
  int64_t max_offset = 0;   // offset <= max_offset (the epoch's length)
};

// state.json: the cursor, the run's signature and the trainer's own fields (`extra`, an object
// whose keys must not be step, epoch, offset, run or schema_version).
nlohmann::json trainer_state_json(const TrainerCursor& cursor, const RunSignature& run,
                                  const nlohmann::json& extra = nlohmann::json::object());

// Checks `state` (read from `where`) for a resume of `run` and returns its cursor. Fails on a
// missing or out-of-range field, on a state written by another command, and on a changed
// defining option (naming the option and both values). A changed adjustable option, or a state
// written before signatures were recorded, is appended to `notes`.
TrainerCursor read_trainer_state(const nlohmann::json& state, const RunSignature& run,
                                 const StateLimits& limits, const std::string& where,
                                 std::vector<std::string>* notes);

}  // namespace slimbert
