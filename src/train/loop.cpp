#include "slimbert/train/loop.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/core/runtime.h"
#include "slimbert/data/mlm.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/progress.h"

namespace fs = std::filesystem;

namespace slimbert {

void backward_pass(const at::Tensor& loss, const TrainBatch& batch, double micro_batches,
                   bool last_pass) {
  const at::Tensor scaled = loss / micro_batches;
  if (last_pass && batch.reducer) batch.reducer->arm();
  (batch.share == 1 ? scaled : scaled * batch.share).backward();
}

LoopResult run_training(const LoopOptions& o, const Trainee& t, Sampler& data,
                        TrainingMethod& method) {
  if (o.steps <= 0 || o.accumulation <= 0)
    fail(o.what, ": steps and accumulation must be positive");
  // Rank 0 writes; the others read what it wrote (a shared directory across machines).
  if (is_main_rank()) {
    require_writable_dir(o.out_dir);
    remove_stale_checkpoint_staging(o.out_dir);
  }
  barrier();
  if (distributed()) {
    // Every rank starts from rank 0's weights, whatever each initialised.
    broadcast_from_main(t.model.parameters());
    if (!is_main_rank()) at::manual_seed(mix_seed(o.seed, static_cast<uint64_t>(dist().rank), 11));
  }
  // Gradients are summed over the ranks while the last backward of each step runs.
  std::optional<GradientReducer> reducer;
  if (distributed()) {
    std::vector<at::Tensor> trained;
    for (const auto& p : t.model.parameters())
      if (p.requires_grad()) trained.push_back(p);
    reducer.emplace(trained);
  }
  LoopResult result;
  // No validation yet: -inf, which state.json stores as null.
  double best = -std::numeric_limits<double>::infinity();
  int64_t step = 0;
  const std::string resume_dir = o.resume ? latest_checkpoint(o.out_dir) : "";
  if (o.resume && resume_dir.empty() && is_main_rank())
    std::cerr << o.what << ": --resume: no checkpoint in " << o.out_dir
              << "/checkpoints, starting fresh\n";
  t.model.train();
  if (!resume_dir.empty()) {
    const at::ScalarType precision = parameter_dtype(t.model);
    load_state(t.model, load_weights(resume_dir, precision), weights_path(resume_dir));
    // Epochs advance once per micro-batch at most.
    const StateLimits limits{o.steps, o.steps * o.accumulation, data.examples()};
    const ResumedState resumed =
        load_training_state(resume_dir, o.run, limits, t.optimizer, precision);
    step = resumed.cursor.step;
    data.seek(resumed.cursor.epoch, resumed.cursor.offset);
    if (o.keep_best) {
      const JsonFields f(resumed.state, resume_dir + "/trainer_state/state.json");
      if (f.has("best")) best = f.number("best");
      result.best_step = f.integer("best_step", 0, step);
      // A run resumed at its end validates no more: what it reports is the saved best.
      if (std::isfinite(best)) result.best = {{"main", best}};
    }
    method.restore_state(resumed.state);
    if (is_main_rank())
      std::cerr << o.what << ": resumed from " << resume_dir << " at step " << step << "\n";
  }
  auto save = [&] {
    // Every rank hands its generator state over; rank 0 writes the checkpoint.
    nlohmann::json state = method.save_state();
    if (o.keep_best) {
      state["best"] = best;
      state["best_step"] = result.best_step;
    }
    save_training_checkpoint(o.out_dir, {step, data.epoch(), data.offset()}, o.run, state, t.config,
                             t.model, t.tokenizer, t.optimizer, o.keep_last);
  };

  const int64_t warmup = static_cast<int64_t>(o.warmup_fraction * static_cast<double>(o.steps));
  std::optional<Progress> progress;
  if (is_main_rank()) {
    progress.emplace(o.what, o.steps, (fs::path(o.out_dir) / "metrics.jsonl").string(), step);
    if (!run_config().empty())
      write_file_atomic((fs::path(o.out_dir) / "config.json").string(), run_config());
  }
  const double peak = measure_matmul_gflops() * 1e9;
  const auto started = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  int64_t tokens = 0, loss_n = 0;
  double flops = 0, loss_sum = 0, overlap_sum = 0;
  while (step < o.steps) {
    t.optimizer.zero_grad();
    double step_loss = 0;
    auto stop_if_not_finite = [&](double l) {
      if (std::isfinite(l)) return;
      const std::string last = latest_checkpoint(o.out_dir);
      fail(o.what, ": loss became ", l, " at step ", step + 1,
           "; stopping. The last good checkpoint is ",
           last.empty() ? std::string("none (no checkpoint saved yet)") : last,
           ". Try a lower --lr or stronger --clip.");
    };
    for (int64_t micro = 0; micro < o.accumulation; ++micro) {
      TrainBatch batch = data.next();
      if (reducer && micro == o.accumulation - 1) batch.reducer = &*reducer;
      if (batch.empty()) continue;
      const double l = method.backward(batch, static_cast<double>(o.accumulation));
      if (!distributed()) stop_if_not_finite(l);
      step_loss += (batch.share == 1 ? l : l * batch.share) / static_cast<double>(o.accumulation);
      tokens += batch.tokens;
      flops += 3.0 * method.forward_flops(batch);
    }
    if (distributed()) {
      // Before anything reads a gradient: clipping, WID's masks and surgery see the global batch.
      overlap_sum += reducer->finish();
      step_loss = all_reduce_sum(step_loss);
      stop_if_not_finite(step_loss);  // the same value on every rank: all stop together
    }
    const double grad_norm = clip_grad_norm(t.model, o.clip);
    method.before_update(step + 1);
    const double lr_scale = linear_schedule(step, warmup, o.steps);
    t.optimizer.step(lr_scale);
    ++step;
    method.after_update(step);
    loss_sum += step_loss;
    ++loss_n;

    const bool epoch_end = data.epoch_done();
    if (step % o.log_every == 0 || step == o.steps) {
      std::map<std::string, double> values = {{"loss", loss_sum / static_cast<double>(loss_n)},
                                              {"lr", o.lr * lr_scale},
                                              {"grad_norm", grad_norm}};
      values.merge(method.report());
      // The share of the gradients whose all-reduce started while backward still ran.
      if (reducer) values["allreduce_overlap"] = overlap_sum / static_cast<double>(loss_n);
      if (distributed()) {
        tokens = static_cast<int64_t>(all_reduce_sum(static_cast<double>(tokens)));
        flops = all_reduce_sum(flops);
      }
      if (progress) progress->report(step, values, tokens, flops, peak * dist().world);
      tokens = loss_n = 0;
      flops = loss_sum = overlap_sum = 0;
    }
    if (o.validate.due(step, o.steps, epoch_end) && is_main_rank()) {
      result.validation = method.validate();
      progress->event(step, o.keep_best ? "dev" : "validation", result.validation);
      if (o.keep_best && result.validation.at("main") > best) {
        best = result.validation.at("main");
        result.best_step = step;
        result.best = result.validation;
        save_checkpoint((fs::path(o.out_dir) / "best").string(), t.config, t.model, t.tokenizer,
                        t.save);
      }
    }
    bool out_of_budget =
        step < o.steps &&
        ((o.max_minutes > 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >
              o.max_minutes * 60) ||
         (o.stop_after > 0 && step - first_step >= o.stop_after));
    // Clocks differ between ranks: they stop when any of them is out of time.
    if (distributed() && o.max_minutes > 0) out_of_budget = all_reduce_sum(out_of_budget) > 0;
    if (o.save.due(step, o.steps, epoch_end) || out_of_budget) {
      save();
      if (progress) progress->event(step, "checkpoint", {}, checkpoint_dir(o.out_dir, step));
    }
    if (out_of_budget) {
      if (progress) progress->event(step, "stopped", {}, "budget reached; --resume continues");
      result.step = step;
      return result;
    }
  }
  if (progress) progress->finish();
  result.step = step;
  result.finished = true;
  return result;
}

}  // namespace slimbert
