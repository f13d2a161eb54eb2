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

MlmOutput mlm_step(BertForMaskedLM& model, const MlmBatch& batch) {
  Batch in{batch.input_ids, at::Tensor(), batch.attention_mask};
  at::Tensor hidden = model->bert->forward(in).last();  // (B, T, H)
  at::Tensor rows =
      hidden.reshape({-1, hidden.size(-1)}).index_select(0, batch.positions);  // (N, H)
  at::Tensor logits = model->logits(rows);                                     // (N, V)
  MlmOutput out;
  out.loss = at::cross_entropy_loss(logits, batch.labels);
  out.correct = logits.argmax(-1).eq(batch.labels).sum().item<int64_t>();
  out.count = batch.labels.size(0);
  return out;
}

namespace {

std::pair<double, double> evaluate(BertForMaskedLM& model, const ShardSet& val,
                                   const PretrainOptions& o, const MaskingOptions& masking) {
  if (val.size() == 0) return {NAN, NAN};
  model->eval();
  at::NoGradGuard no_grad;
  MlmLoader loader(val, std::min<int64_t>(o.batch_size, val.size()), masking, /*seed=*/12345);
  double loss = 0;
  int64_t correct = 0, count = 0;
  const int64_t n =
      std::min<int64_t>(o.eval_batches, std::max<int64_t>(1, loader.batches_per_epoch()));
  for (int64_t b = 0; b < n; ++b) {
    MlmOutput r = mlm_step(model, loader.next());
    loss += r.loss.item<double>() * static_cast<double>(r.count);
    correct += r.correct;
    count += r.count;
  }
  model->train();
  return {loss / static_cast<double>(std::max<int64_t>(1, count)),
          static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, count))};
}

}  // namespace

PretrainResult pretrain(const PretrainOptions& o) {
  if (o.steps <= 0 || o.batch_size <= 0 || o.accumulation <= 0)
    fail("steps, batch size and accumulation must be positive");
  const Tokenizer tokenizer = Tokenizer::from_dir(o.init_dir);
  const BertConfig config = load_config_dir(o.init_dir);
  const ShardSet train = ShardSet::open(o.shards_dir, "train");
  const ShardSet val = ShardSet::open(o.shards_dir, "validation");
  if (train.seq_len() > config.max_position_embeddings)
    fail(o.shards_dir, ": sequences of ", train.seq_len(),
         " tokens exceed max_position_embeddings ", config.max_position_embeddings, " of ",
         o.init_dir);
  require_writable_dir(o.out_dir);

  MaskingOptions masking;
  masking.mask_id = tokenizer.mask_id();
  masking.vocab_size = config.vocab_size;
  masking.special_ids = {tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()};

  std::string start_dir = o.init_dir;
  const std::string resume_dir = o.resume ? latest_checkpoint(o.out_dir) : "";
  if (o.resume && resume_dir.empty())
    std::cerr << "pretrain: --resume: no checkpoint in " << o.out_dir
              << "/checkpoints, starting fresh\n";
  if (!resume_dir.empty()) start_dir = resume_dir;

  at::manual_seed(o.seed);
  BertForMaskedLM model = load_masked_lm(start_dir);
  model->train();
  AdamW optimizer(
      bert_param_groups(named_parameters(*model), o.lr, o.weight_decay),
      AdamOptions{o.optimizer, 0.9, 0.999, o.optimizer == AdamVariant::kBert ? 1e-6 : 1e-8});
  MlmLoader loader(train, o.batch_size, masking, o.seed);
  int64_t step = 0;
  if (!resume_dir.empty()) {
    const nlohmann::json cursor = load_training_state(resume_dir, optimizer);
    step = cursor.at("step").get<int64_t>();
    loader.seek(cursor.at("epoch").get<int64_t>(), cursor.at("offset").get<int64_t>());
    std::cerr << "pretrain: resumed from " << resume_dir << " at step " << step << "\n";
  }
  auto save = [&](int64_t at_step) {
    save_training_checkpoint(o.out_dir, at_step, config, *model, tokenizer, optimizer,
                             {{"epoch", loader.epoch()},
                              {"offset", loader.offset()},
                              {"seed", o.seed},
                              {"total_steps", o.steps}},
                             o.keep_last);
  };

  const double peak = measure_matmul_gflops() * 1e9;
  const int64_t warmup = static_cast<int64_t>(o.warmup_fraction * static_cast<double>(o.steps));
  Progress progress("pretrain", o.steps, (fs::path(o.out_dir) / "metrics.jsonl").string(), step);
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
      MlmOutput out = mlm_step(model, batch);
      (out.loss / static_cast<double>(o.accumulation)).backward();
      const double l = out.loss.item<double>();
      if (!std::isfinite(l)) {
        const std::string last = latest_checkpoint(o.out_dir);
        fail("pretrain: loss became ", l, " at step ", step + 1,
             "; stopping. The last good checkpoint is ",
             last.empty() ? std::string("none (no checkpoint saved yet)") : last,
             ". Try a lower --lr or stronger --clip.");
      }
      step_loss += l / static_cast<double>(o.accumulation);
      tokens += batch.tokens;
      correct += out.correct;
      count += out.count;
      flops += 3.0 * (encoder_flops(config, train.seq_len()) *
                          static_cast<double>(batch.input_ids.size(0)) +
                      mlm_head_flops(config, out.count));
    }
    const double grad_norm = clip_grad_norm(*model, o.clip);
    const double lr_scale = linear_schedule(step, warmup, o.steps);
    optimizer.step(lr_scale);
    ++step;
    loss_sum += step_loss;
    ++loss_n;
    if (step % o.log_every == 0 || step == o.steps) {
      progress.report(step,
                      {{"loss", loss_sum / static_cast<double>(loss_n)},
                       {"mlm_acc", static_cast<double>(correct) /
                                       static_cast<double>(std::max<int64_t>(1, count))},
                       {"lr", o.lr * lr_scale},
                       {"grad_norm", grad_norm}},
                      tokens, flops, peak);
      tokens = 0;
      flops = 0;
      loss_sum = 0;
      loss_n = correct = count = 0;
    }
    if (o.eval_every > 0 && (step % o.eval_every == 0 || step == o.steps)) {
      auto [vl, va] = evaluate(model, val, o, masking);
      result.validation_loss = vl;
      result.validation_accuracy = va;
      progress.event(step, "validation",
                     {{"loss", vl}, {"perplexity", std::exp(vl)}, {"mlm_acc", va}});
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
  SaveOptions final_options;
  if (o.float16_final) final_options.float_dtype = DType::F16;
  save_checkpoint((fs::path(o.out_dir) / "model").string(), config, *model, tokenizer,
                  final_options);
  result.step = step;
  result.finished = true;
  return result;
}

}  // namespace slimbert
