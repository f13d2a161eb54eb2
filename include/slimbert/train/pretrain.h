// MLM pretraining (and continued pretraining) of a BertForMaskedLM on corpus shards.
#pragma once

#include <cstdint>
#include <string>

#include "slimbert/data/mlm.h"
#include "slimbert/model/bert.h"
#include "slimbert/train/optimizer.h"

namespace slimbert {

struct PretrainOptions {
  std::string init_dir;    // checkpoint to start from (config, weights, tokenizer)
  std::string shards_dir;  // from build_shards
  std::string out_dir;     // checkpoints/, model/ (the final HF checkpoint), metrics.jsonl
  int64_t steps = 1000;
  int64_t batch_size = 32;
  int64_t accumulation = 1;  // micro-batches per optimizer step
  double lr = 5e-4;
  double weight_decay = 0.01;
  double warmup_fraction = 0.06;
  double clip = 1.0;  // max gradient norm (0 = off)
  AdamVariant optimizer = AdamVariant::kTorch;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t eval_every = 200;
  int64_t eval_batches = 20;
  int64_t save_every = 200;
  int64_t keep_last = 2;
  bool resume = false;         // continue from the newest checkpoint in out_dir
  double max_minutes = 0;      // > 0: checkpoint and stop after this much wall time
  int64_t stop_after = 0;      // > 0: checkpoint and stop after this many steps of this run
  bool float16_final = false;  // store the final model in F16 (half the size)
};

struct PretrainResult {
  int64_t step = 0;
  bool finished = false;  // false: stopped by max_minutes (resume to continue)
  double validation_loss = 0, validation_accuracy = 0;
};

PretrainResult pretrain(const PretrainOptions& options);

// One MLM forward with the sparse head: the vocabulary projection only at the masked
// positions (it dominates small models). Loss is the mean cross-entropy over them.
struct MlmOutput {
  at::Tensor loss;
  int64_t correct = 0, count = 0;
};
MlmOutput mlm_step(BertForMaskedLM& model, const MlmBatch& batch);

}  // namespace slimbert
