#include "slimbert/train/pretrain.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/runtime.h"
#include "slimbert/data/mlm.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/loop.h"
#include "slimbert/train/progress.h"

namespace fs = std::filesystem;

namespace slimbert {

MlmOutput mlm_loss(const at::Tensor& hidden, const MlmBatch& batch,
                   const std::function<at::Tensor(const at::Tensor&)>& logits_of) {
  const at::Tensor positions = batch.positions.to(hidden.device());
  const at::Tensor labels = batch.labels.to(hidden.device());
  at::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions);  // (N, H)
  at::Tensor logits = logits_of(rows);                                                 // (N, V)
  MlmOutput out;
  out.loss = at::cross_entropy_loss(logits, labels);
  out.correct = logits.argmax(-1).eq(labels).sum().item<int64_t>();
  out.count = batch.labels.size(0);
  return out;
}

MlmOutput mlm_step(BertForMaskedLM& model, const MlmBatch& batch) {
  Batch in{batch.input_ids, at::Tensor(), batch.attention_mask};
  return mlm_loss(model->bert->forward(in).last(), batch,
                  [&](const at::Tensor& rows) { return model->logits(rows); });
}

void require_fits_positions(const ShardSet& shards, const std::string& shards_dir,
                            const BertConfig& config, const std::string& model_dir) {
  if (shards.seq_len() > config.max_sequence_length())
    fail(shards_dir, ": sequences of ", shards.seq_len(), " tokens exceed max_position_embeddings ",
         config.max_sequence_length(), " of ", model_dir);
  if (shards.vocab_size() > config.vocab_size)
    fail(shards_dir, ": tokenized with a vocabulary of ", shards.vocab_size(),
         " tokens, ids outside the vocabulary of ", config.vocab_size, " of ", model_dir,
         " (config.json's vocab_size)");
}

MaskingOptions mlm_masking(const Tokenizer& tokenizer, const BertConfig& config) {
  MaskingOptions masking;
  masking.mask_id = tokenizer.mask_id();
  masking.vocab_size = config.vocab_size;
  masking.special_ids = {tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()};
  return masking;
}

MlmValidation evaluate_mlm(torch::nn::Module& model,
                           const std::function<MlmOutput(const MlmBatch&)>& forward,
                           const ShardSet& val, int64_t batch_size, int64_t batches,
                           const MaskingOptions& masking) {
  if (val.size() == 0) return {NAN, NAN};
  model.eval();
  at::NoGradGuard no_grad;
  // A fixed seed: every evaluation of every model sees the same masked batches.
  MlmLoader loader(val, std::min<int64_t>(batch_size, val.size()), masking, /*seed=*/12345);
  double loss = 0;
  int64_t correct = 0, count = 0;
  const int64_t n = std::min<int64_t>(batches, std::max<int64_t>(1, loader.batches_per_epoch()));
  for (int64_t b = 0; b < n; ++b) {
    MlmOutput r = forward(loader.next());
    loss += r.loss.item<double>() * static_cast<double>(r.count);
    correct += r.correct;
    count += r.count;
  }
  model.train();
  return {loss / static_cast<double>(std::max<int64_t>(1, count)),
          static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, count))};
}

namespace {

// Rows [lo, hi) of a masked batch, with the masked positions that fall in them.
MlmBatch mlm_rows(const MlmBatch& all, int64_t lo, int64_t hi) {
  const int64_t T = all.input_ids.size(1);
  MlmBatch part;
  part.input_ids = all.input_ids.narrow(0, lo, hi - lo);
  part.attention_mask = all.attention_mask.narrow(0, lo, hi - lo);
  const at::Tensor inside = all.positions.ge(lo * T).logical_and(all.positions.lt(hi * T));
  part.positions = all.positions.masked_select(inside) - lo * T;
  part.labels = all.labels.masked_select(inside);
  part.tokens = part.attention_mask.sum().item<int64_t>();
  return part;
}

}  // namespace

TrainBatch MlmSampler::next() {
  TrainBatch b;
  // Every rank masks the whole global batch (cheap beside the forward), so that the masks do
  // not depend on the number of ranks, and keeps its rows.
  b.mlm = loader_.next();
  if (distributed()) {
    const int64_t B = b.mlm.input_ids.size(0), W = dist().world, r = dist().rank;
    const int64_t all_masked = b.mlm.labels.size(0);
    b.mlm = mlm_rows(b.mlm, B * r / W, B * (r + 1) / W);
    b.share = all_masked == 0
                  ? 0.0
                  : static_cast<double>(b.mlm.labels.size(0)) / static_cast<double>(all_masked);
  }
  b.inputs = Batch{b.mlm.input_ids, at::Tensor(), b.mlm.attention_mask};
  b.tokens = b.mlm.tokens;
  return b;
}

MlmMethod::MlmMethod(torch::nn::Module& model, const BertConfig& config,
                     const PretrainOptions& options, const Tokenizer& tokenizer)
    : model_(model),
      config_(config),
      options_(options),
      validation_(ShardSet::open(options.shards_dir, "validation")),
      masking_(mlm_masking(tokenizer, config)) {}

double MlmMethod::backward(const TrainBatch& batch, double micro_batches) {
  const MlmOutput out = forward(batch.mlm);
  backward_pass(out.loss, batch, micro_batches);
  correct_ += out.correct;
  count_ += out.count;
  return out.loss.item<double>();
}

double MlmMethod::forward_flops(const TrainBatch& batch) const {
  const int64_t sequences = batch.mlm.input_ids.size(0);
  return encoder_flops(config_, batch.mlm.input_ids.size(1)) * static_cast<double>(sequences) +
         mlm_head_flops(config_, batch.mlm.labels.size(0));
}

std::map<std::string, double> MlmMethod::report() {
  const double correct = all_reduce_sum(static_cast<double>(correct_));
  const double count = all_reduce_sum(static_cast<double>(count_));
  const double accuracy = correct / std::max(1.0, count);
  correct_ = count_ = 0;
  return {{"mlm_acc", accuracy}};
}

MlmValidation MlmMethod::evaluate() {
  return evaluate_mlm(
      model_, [&](const MlmBatch& b) { return forward(b); }, validation_, options_.batch_size,
      options_.eval_batches, masking_);
}

std::map<std::string, double> MlmMethod::validate() {
  const auto [loss, accuracy] = evaluate();
  return {{"loss", loss}, {"perplexity", std::exp(loss)}, {"mlm_acc", accuracy}};
}

PretrainResult train_mlm(const std::string& what, const PretrainOptions& o, const Trainee& t,
                         MlmMethod& method) {
  if (o.steps <= 0 || o.batch_size <= 0 || o.accumulation <= 0)
    fail("steps, batch size and accumulation must be positive");
  ShardSet train = ShardSet::open(o.shards_dir, "train");
  require_fits_positions(train, o.shards_dir, t.config, o.init_dir);
  LoopOptions loop;
  loop.take_common(o);
  loop.what = what;
  loop.steps = o.steps;
  loop.accumulation = o.accumulation;
  loop.validate = Every{o.eval_every, false, o.eval_every > 0};
  loop.save = Every{o.save_every, false, true};
  loop.max_minutes = o.max_minutes;
  loop.run.command = what;
  o.sign(loop.run);
  loop.run.add("train_sequences", train.size(), OnResume::kDefining);
  loop.run.add("seq_len", train.seq_len(), OnResume::kDefining);
  MlmSampler data(std::move(train), o.batch_size, mlm_masking(t.tokenizer, t.config), o.seed);
  at::manual_seed(o.seed);  // dropout
  const LoopResult r = run_training(loop, t, data, method);
  PretrainResult result;
  result.step = r.step;
  result.finished = r.finished;
  if (!r.validation.empty()) {
    result.validation_loss = r.validation.at("loss");
    result.validation_accuracy = r.validation.at("mlm_acc");
  }
  return result;
}

namespace {

class Pretraining : public MlmMethod {
 public:
  Pretraining(BertForMaskedLM& model, const BertConfig& config, const PretrainOptions& options,
              const Tokenizer& tokenizer)
      : MlmMethod(*model, config, options, tokenizer), lm_(model) {}
  MlmOutput forward(const MlmBatch& batch) override { return mlm_step(lm_, batch); }

 private:
  BertForMaskedLM& lm_;
};

}  // namespace

PretrainResult pretrain(const PretrainOptions& o) {
  const Tokenizer tokenizer = Tokenizer::from_dir(o.init_dir);
  const BertConfig config = load_config_dir(o.init_dir);
  check_tokenizer_fits(tokenizer, config, o.init_dir);
  BertForMaskedLM model = load_masked_lm(o.init_dir);
  model->to(o.dtype);
  AdamW optimizer(
      bert_param_groups(named_parameters(*model), o.lr, o.weight_decay),
      AdamOptions{o.optimizer, 0.9, 0.999, o.optimizer == AdamVariant::kBert ? 1e-6 : 1e-8});
  Pretraining method(model, config, o, tokenizer);
  PretrainResult result =
      train_mlm("pretrain", o, Trainee{*model, optimizer, config, tokenizer}, method);
  if (!result.finished || !is_main_rank()) return result;
  SaveOptions final_options;
  if (o.float16_final) final_options.float_dtype = DType::F16;
  save_checkpoint((fs::path(o.out_dir) / "model").string(), config, *model, tokenizer,
                  final_options);
  return result;
}

}  // namespace slimbert
