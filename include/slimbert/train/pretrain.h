// MLM pretraining (and continued pretraining) of a BertForMaskedLM on corpus shards.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
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
// The same from the last hidden states (B, T, H) and a head mapping rows (N, H) to logits (N, V).
MlmOutput mlm_loss(const at::Tensor& hidden, const MlmBatch& batch,
                   const std::function<at::Tensor(const at::Tensor&)>& logits);

class Tokenizer;

// Fails unless the sequences of `shards` (from `shards_dir`) fit the positions of the model in
// `model_dir`.
void require_fits_positions(const ShardSet& shards, const std::string& shards_dir,
                            const BertConfig& config, const std::string& model_dir);

// Masking of MLM batches with the tokenizer's special ids (training and validation alike).
MaskingOptions mlm_masking(const Tokenizer& tokenizer, const BertConfig& config);

// Mean MLM loss and accuracy over the first `batches` validation batches, masked with a fixed
// seed, so that every model evaluated on the same shards sees the same positions.
struct MlmValidation {
  double loss = 0, accuracy = 0;  // NaN when the shards hold no validation sequences
};
MlmValidation evaluate_mlm(torch::nn::Module& model,
                           const std::function<MlmOutput(const MlmBatch&)>& forward,
                           const ShardSet& validation, int64_t batch_size, int64_t batches,
                           const MaskingOptions& masking);

// What a trainer built on the MLM loop adds to it (WID: the compactor forward, mask updates and
// gradient surgery). Only `forward` is required.
struct MlmTrainHooks {
  std::function<MlmOutput(const MlmBatch&)> forward;
  // Step `step` (1-based) after backward and clipping, before the optimizer update.
  std::function<void(int64_t step)> before_update;
  // Step `step` (1-based) after the optimizer update.
  std::function<void(int64_t step)> after_update;
  // Saved with each checkpoint's cursor, and handed back on --resume.
  std::function<nlohmann::json()> save_state;
  std::function<void(const nlohmann::json&)> restore_state;
  // Extra values on each progress line (e.g. current kept sizes).
  std::function<std::map<std::string, double>()> report;
  // FLOPs of one micro-batch's forward beyond the plain model's (for MFU).
  std::function<double(int64_t sequences, int64_t masked)> extra_forward_flops;
  // Extra values for each validation line. `evaluate` scores the model as it is at the call on
  // the same validation batches (loss, accuracy): a hook may edit the model, evaluate, restore.
  std::function<std::map<std::string, double>(const std::function<MlmValidation()>& evaluate)>
      extra_validation;
};

// The MLM training loop shared by pretraining and WID: data order, masking, accumulation,
// clipping, schedule, validation, checkpoints (resumable), NaN stop, progress. `model` holds the
// parameters the optimizer updates; on --resume its weights are reloaded from the checkpoint.
// Returns when done or out of budget; the caller writes the final model.
PretrainResult run_mlm_training(const std::string& what, const PretrainOptions& options,
                                torch::nn::Module& model, const BertConfig& config,
                                const Tokenizer& tokenizer, AdamW& optimizer,
                                const MlmTrainHooks& hooks);

}  // namespace slimbert
