// MLM pretraining (and continued pretraining) of a BertForMaskedLM on corpus shards.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "slimbert/data/mlm.h"
#include "slimbert/model/bert.h"
#include "slimbert/train/loop.h"
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
  // Training precision. float64 is for numerical checks (~2x slower): checkpoints keep it, the
  // final model is stored as float32 (or F16).
  at::ScalarType dtype = at::kFloat;

  // The options a resume compares (the loop adds the corpus's size and sequence length).
  void sign(RunSignature& run) const {
    run.add_common(*this);
    run.add("accumulation", accumulation, OnResume::kDefining);
    run.add("steps", steps, OnResume::kDefining);
    run.add("optimizer", optimizer == AdamVariant::kTorch ? "torch" : "bert",
            OnResume::kAdjustable);
    run.add("dtype", dtype == at::kDouble ? "float64" : "float32", OnResume::kAdjustable);
  }
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

// Fails unless the sequences of `shards` (from `shards_dir`) fit the positions and the
// vocabulary of the model in `model_dir`.
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

// Corpus sequences in MlmLoader's seeded order, masked as BERT does.
class MlmSampler : public Sampler {
 public:
  MlmSampler(ShardSet shards, int64_t batch_size, MaskingOptions masking, uint64_t seed)
      : shards_(std::move(shards)), loader_(shards_, batch_size, std::move(masking), seed) {}
  MlmSampler(const MlmSampler&) = delete;  // the loader refers to shards_
  MlmSampler& operator=(const MlmSampler&) = delete;
  TrainBatch next() override;
  int64_t examples() const override { return shards_.size(); }
  int64_t epoch() const override { return loader_.epoch(); }
  int64_t offset() const override { return loader_.offset(); }
  void seek(int64_t epoch, int64_t offset) override { loader_.seek(epoch, offset); }

 private:
  ShardSet shards_;
  MlmLoader loader_;
};

// Masked-language-model training: the loss at the masked positions, validated on the held-out
// shards. Pretraining uses the model's own forward; WID derives from it.
class MlmMethod : public TrainingMethod {
 public:
  MlmMethod(torch::nn::Module& model, const BertConfig& config, const PretrainOptions& options,
            const Tokenizer& tokenizer);
  // The model's MLM forward on one batch.
  virtual MlmOutput forward(const MlmBatch& batch) = 0;

  double backward(const TrainBatch& batch, double micro_batches) override;
  double forward_flops(const TrainBatch& batch) const override;
  std::map<std::string, double> report() override;    // mlm_acc since the last report
  std::map<std::string, double> validate() override;  // loss, perplexity, mlm_acc

 protected:
  // Loss and accuracy on the same fixed validation batches every time.
  MlmValidation evaluate();
  torch::nn::Module& model_;
  const BertConfig& config_;
  const PretrainOptions& options_;

 private:
  ShardSet validation_;
  MaskingOptions masking_;
  int64_t correct_ = 0, count_ = 0;
};

// Runs `method` on the loop with the corpus of `options.shards_dir` (the signature a resume
// checks, the schedule, validation and checkpoints of `options`). The caller writes the final
// model.
PretrainResult train_mlm(const std::string& what, const PretrainOptions& options,
                         const Trainee& trainee, MlmMethod& method);

}  // namespace slimbert
