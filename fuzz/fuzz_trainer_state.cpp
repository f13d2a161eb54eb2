// trainer_state/state.json as a resume reads it: every field checked against the run.
#include "fuzz_util.h"
#include "slimbert/core/json.h"
#include "slimbert/train/state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  static const RunSignature run = [] {
    RunSignature r;
    r.command = "pretrain";
    r.defining = {{"seed", 0}, {"batch_size", 8}, {"steps", 100}};
    r.adjustable = {{"lr", 0.001}};
    return r;
  }();
  fuzz::expect_clean([&] {
    const nlohmann::json j =
        parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "state.json");
    std::vector<std::string> notes;
    const TrainerCursor c = read_trainer_state(j, run, {100, 400, 1000}, "state.json", &notes);
    if (c.step < 0 || c.step > 100 || c.epoch < 0 || c.epoch > 400 || c.offset < 0 ||
        c.offset > 1000)
      std::abort();
    // What a trainer reads beside the cursor.
    const JsonFields f(j, "state.json");
    if (f.has("best")) (void)f.number("best");
    if (f.has("best_step")) (void)f.integer("best_step", 0, c.step);
  });
  return 0;
}
