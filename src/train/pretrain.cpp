#include "slimbert/train/pretrain.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/runtime.h"
#include "slimbert/data/mlm.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/train/checkpointing.h"
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
  if (shards.seq_len() > config.max_position_embeddings)
    fail(shards_dir, ": sequences of ", shards.seq_len(), " tokens exceed max_position_embeddings ",
         config.max_position_embeddings, " of ", model_dir);
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

PretrainResult run_mlm_training(const std::string& what, const PretrainOptions& o,
                                torch::nn::Module& model, const BertConfig& config,
                                const Tokenizer& tokenizer, AdamW& optimizer,
                                const MlmTrainHooks& hooks) {
  if (o.steps <= 0 || o.batch_size <= 0 || o.accumulation <= 0)
    fail("steps, batch size and accumulation must be positive");
  const ShardSet train = ShardSet::open(o.shards_dir, "train");
  const ShardSet val = ShardSet::open(o.shards_dir, "validation");
  require_fits_positions(train, o.shards_dir, config, o.init_dir);
  require_writable_dir(o.out_dir);

  const MaskingOptions masking = mlm_masking(tokenizer, config);

  at::manual_seed(o.seed);
  model.train();
  MlmLoader loader(train, o.batch_size, masking, o.seed);
  int64_t step = 0;
  remove_stale_checkpoint_staging(o.out_dir);
  const std::string resume_dir = o.resume ? latest_checkpoint(o.out_dir) : "";
  if (o.resume && resume_dir.empty())
    std::cerr << what << ": --resume: no checkpoint in " << o.out_dir
              << "/checkpoints, starting fresh\n";
  RunSignature run;
  run.command = what;
  run.defining = {
      {"seed", o.seed},   {"batch_size", o.batch_size},      {"accumulation", o.accumulation},
      {"steps", o.steps}, {"train_sequences", train.size()}, {"seq_len", train.seq_len()}};
  run.adjustable = {{"lr", o.lr},
                    {"weight_decay", o.weight_decay},
                    {"warmup_fraction", o.warmup_fraction},
                    {"clip", o.clip},
                    {"optimizer", o.optimizer == AdamVariant::kTorch ? "torch" : "bert"}};
  if (!resume_dir.empty()) {
    load_state(model, load_weights(resume_dir), weights_path(resume_dir));
    // Epochs advance once per micro-batch at most.
    const StateLimits limits{o.steps, o.steps * o.accumulation, train.size()};
    const ResumedState resumed = load_training_state(resume_dir, run, limits, optimizer);
    step = resumed.cursor.step;
    loader.seek(resumed.cursor.epoch, resumed.cursor.offset);
    if (hooks.restore_state) hooks.restore_state(resumed.state);
    std::cerr << what << ": resumed from " << resume_dir << " at step " << step << "\n";
  }
  auto save = [&](int64_t at_step) {
    const nlohmann::json extra = hooks.save_state ? hooks.save_state() : nlohmann::json::object();
    save_training_checkpoint(o.out_dir, {at_step, loader.epoch(), loader.offset()}, run, extra,
                             config, model, tokenizer, optimizer, o.keep_last);
  };

  const double peak = measure_matmul_gflops() * 1e9;
  const int64_t warmup = static_cast<int64_t>(o.warmup_fraction * static_cast<double>(o.steps));
  Progress progress(what, o.steps, (fs::path(o.out_dir) / "metrics.jsonl").string(), step);
  const auto started = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  PretrainResult result;
  int64_t tokens = 0;
  double flops = 0, loss_sum = 0;
  int64_t loss_n = 0, correct = 0, count = 0;
  while (step < o.steps) {
    optimizer.zero_grad();
    double step_loss = 0;
    for (int64_t micro = 0; micro < o.accumulation; ++micro) {
      MlmBatch batch = loader.next();
      MlmOutput out = hooks.forward(batch);
      (out.loss / static_cast<double>(o.accumulation)).backward();
      const double l = out.loss.item<double>();
      if (!std::isfinite(l)) {
        const std::string last = latest_checkpoint(o.out_dir);
        fail(what, ": loss became ", l, " at step ", step + 1,
             "; stopping. The last good checkpoint is ",
             last.empty() ? std::string("none (no checkpoint saved yet)") : last,
             ". Try a lower --lr or stronger --clip.");
      }
      step_loss += l / static_cast<double>(o.accumulation);
      tokens += batch.tokens;
      correct += out.correct;
      count += out.count;
      const int64_t sequences = batch.input_ids.size(0);
      double forward = encoder_flops(config, train.seq_len()) * static_cast<double>(sequences) +
                       mlm_head_flops(config, out.count);
      if (hooks.extra_forward_flops) forward += hooks.extra_forward_flops(sequences, out.count);
      flops += 3.0 * forward;
    }
    const double grad_norm = clip_grad_norm(model, o.clip);
    if (hooks.before_update) hooks.before_update(step + 1);
    const double lr_scale = linear_schedule(step, warmup, o.steps);
    optimizer.step(lr_scale);
    ++step;
    if (hooks.after_update) hooks.after_update(step);
    loss_sum += step_loss;
    ++loss_n;
    if (step % o.log_every == 0 || step == o.steps) {
      std::map<std::string, double> values = {
          {"loss", loss_sum / static_cast<double>(loss_n)},
          {"mlm_acc",
           static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, count))},
          {"lr", o.lr * lr_scale},
          {"grad_norm", grad_norm}};
      if (hooks.report) values.merge(hooks.report());
      progress.report(step, values, tokens, flops, peak);
      tokens = 0;
      flops = 0;
      loss_sum = 0;
      loss_n = correct = count = 0;
    }
    if (o.eval_every > 0 && (step % o.eval_every == 0 || step == o.steps)) {
      auto evaluate = [&] {
        return evaluate_mlm(model, hooks.forward, val, o.batch_size, o.eval_batches, masking);
      };
      auto [vl, va] = evaluate();
      result.validation_loss = vl;
      result.validation_accuracy = va;
      std::map<std::string, double> values = {
          {"loss", vl}, {"perplexity", std::exp(vl)}, {"mlm_acc", va}};
      if (hooks.extra_validation) values.merge(hooks.extra_validation(evaluate));
      progress.event(step, "validation", values);
    }
    const bool out_of_time =
        (o.max_minutes > 0 &&
         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >
             o.max_minutes * 60) ||
        (o.stop_after > 0 && step - first_step >= o.stop_after);
    if ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps || out_of_time) {
      save(step);
      progress.event(step, "checkpoint", {}, checkpoint_dir(o.out_dir, step));
    }
    if (out_of_time && step < o.steps) {
      progress.event(step, "stopped", {}, "budget reached; --resume continues");
      result.step = step;
      return result;
    }
  }
  progress.finish();
  result.step = step;
  result.finished = true;
  return result;
}

PretrainResult pretrain(const PretrainOptions& o) {
  const Tokenizer tokenizer = Tokenizer::from_dir(o.init_dir);
  const BertConfig config = load_config_dir(o.init_dir);
  BertForMaskedLM model = load_masked_lm(o.init_dir);
  AdamW optimizer(
      bert_param_groups(named_parameters(*model), o.lr, o.weight_decay),
      AdamOptions{o.optimizer, 0.9, 0.999, o.optimizer == AdamVariant::kBert ? 1e-6 : 1e-8});
  MlmTrainHooks hooks;
  hooks.forward = [&](const MlmBatch& batch) { return mlm_step(model, batch); };
  PretrainResult result =
      run_mlm_training("pretrain", o, *model, config, tokenizer, optimizer, hooks);
  if (!result.finished) return result;
  SaveOptions final_options;
  if (o.float16_final) final_options.float_dtype = DType::F16;
  save_checkpoint((fs::path(o.out_dir) / "model").string(), config, *model, tokenizer,
                  final_options);
  return result;
}

}  // namespace slimbert
