// The training loop every method runs on: MLM pretraining, fine-tuning, task distillation, WID
// and the three DynaBERT stages. It reads top to bottom:
//
//   for each step:
//     zero the gradients
//     for each micro-batch: batch = data.next(); method.backward(batch)
//     clip; method.before_update(step); optimizer.step(schedule); method.after_update(step)
//     if due: log, validate (best/ by "main" where the method keeps a best model), checkpoint
//
// A method is an object with named methods (its loss and backward, what it does around the
// update, its own checkpoint state, its validation); the loop owns data order, accumulation,
// clipping, the learning-rate schedule, progress, FLOP counting, checkpoints and exact resume.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "slimbert/core/dist.h"
#include "slimbert/data/mlm.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/bert.h"
#include "slimbert/train/optimizer.h"
#include "slimbert/train/state.h"

namespace slimbert {

class Tokenizer;

// One micro-batch as a method sees it.
struct TrainBatch {
  Batch inputs;  // MLM: on the host (the forward moves it); tasks: on the compute device
  MlmBatch mlm;  // MLM batches: the masked positions and their labels
  std::vector<size_t> rows;  // task batches: the examples' indices in the training set
  int64_t tokens = 0;        // non-padding tokens
  // This rank's part of the global batch's loss terms (rows, or masked tokens for MLM): its mean
  // loss is weighted by it, so that the gradients summed over ranks are those of the global
  // batch's mean. 1 in a single process; 0 for a rank that got no rows of a short last batch.
  double share = 1;
  bool empty() const { return share == 0; }
  // Set by the loop on a step's last micro-batch when ranks sum their gradients: the last
  // backward pass over it starts their all-reduce bucket by bucket.
  GradientReducer* reducer = nullptr;
};

// A method's backward over its mean loss on the micro-batch, divided by the micro-batches per
// step and weighted by the rank's share. A method with several passes per micro-batch says which
// is the last: no gradient may change after it until the update.
void backward_pass(const at::Tensor& loss, const TrainBatch& batch, double micro_batches,
                   bool last_pass = true);

// The training data in a fixed, seeded order, with a cursor that checkpoints save and restore.
// Global batches and the order do not depend on the number of ranks; each rank draws its part of
// every global batch (rows [B r / W, B (r + 1) / W)). The cursor counts global examples.
class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual TrainBatch next() = 0;
  virtual int64_t examples() const = 0;  // per epoch
  virtual int64_t epoch() const = 0;
  virtual int64_t offset() const = 0;  // examples of this epoch already drawn
  virtual void seek(int64_t epoch, int64_t offset) = 0;
  bool epoch_done() const { return offset() >= examples(); }
};

// What a training method supplies: backward, forward_flops and validate are required.
class TrainingMethod {
 public:
  virtual ~TrainingMethod() = default;
  // Forward(s) and backward of one micro-batch, the gradients scaled by `scale` (1 / the number
  // of micro-batches per step); returns the loss to log.
  virtual double backward(const TrainBatch& batch, double scale) = 0;
  // Forward FLOPs of the micro-batch (for MFU).
  virtual double forward_flops(const TrainBatch& batch) const = 0;
  // Step `step` (1-based), after backward and clipping, before the optimizer update.
  virtual void before_update(int64_t /*step*/) {}
  // Step `step` (1-based), after the optimizer update.
  virtual void after_update(int64_t /*step*/) {}
  // Values added to each progress line since the last one (loss parts, kept sizes, ...).
  virtual std::map<std::string, double> report() { return {}; }
  // Scores the model as it is now; "main" (higher is better) selects best/ where kept.
  virtual std::map<std::string, double> validate() = 0;
  // The method's own fields of each checkpoint's state.json, handed back on --resume.
  virtual nlohmann::json save_state() const { return nlohmann::json::object(); }
  virtual void restore_state(const nlohmann::json& /*state*/) {}
};

// When something happens: every `steps` steps (0: not by count), at the end of each epoch, at
// the last step.
struct Every {
  int64_t steps = 0;
  bool epoch_ends = false;
  bool last_step = false;
  bool due(int64_t step, int64_t total, bool epoch_end) const {
    return (steps > 0 && step % steps == 0) || (epoch_ends && epoch_end) ||
           (last_step && step == total);
  }
};

struct LoopOptions {
  std::string what;     // names the run in progress lines, errors and checkpoints
  std::string out_dir;  // checkpoints/, best/, metrics.jsonl
  int64_t steps = 0;    // optimizer steps in all
  int64_t accumulation = 1;
  double lr = 0;  // peak rate, for the progress lines (the optimizer's groups hold the rates)
  double warmup_fraction = 0;
  double clip = 0;  // max gradient norm (0 = off)
  int64_t log_every = 10;
  Every validate;
  Every save;
  int64_t keep_last = 1;
  bool keep_best = false;  // validate() has "main": best/ holds the best model
  bool resume = false;
  double max_minutes = 0;  // > 0: checkpoint and stop after this much wall time
  int64_t stop_after = 0;  // > 0: checkpoint and stop after this many steps of this run
  RunSignature run;        // what a resumed run must share with the one it continues
  // With several ranks, rank r > 0 draws its dropout from a stream of its own (derived from this
  // seed); rank 0 keeps the one the caller seeded.
  uint64_t seed = 0;

  // The settings every training command's options struct holds under these names.
  template <typename Options>
  void take_common(const Options& o) {
    out_dir = o.out_dir;
    lr = o.lr;
    warmup_fraction = o.warmup_fraction;
    clip = o.clip;
    log_every = o.log_every;
    keep_last = o.keep_last;
    resume = o.resume;
    stop_after = o.stop_after;
    seed = o.seed;
  }
};

// What the loop works on. The model's weights are reloaded from the checkpoint on --resume.
struct Trainee {
  torch::nn::Module& model;
  AdamW& optimizer;
  const BertConfig& config;  // written with each checkpoint
  const Tokenizer& tokenizer;
  SaveOptions save = {};  // how best/ and model/ are written
};

// On every rank; only rank 0 validates, logs and writes (its result holds the validations).
struct LoopResult {
  int64_t step = 0;
  bool finished = false;  // false: stopped by max_minutes / stop_after (--resume continues)
  int64_t best_step = 0;
  std::map<std::string, double> best;        // validation values at best_step (keep_best)
  std::map<std::string, double> validation;  // the last validation's values
};

LoopResult run_training(const LoopOptions& options, const Trainee& trainee, Sampler& data,
                        TrainingMethod& method);

}  // namespace slimbert
