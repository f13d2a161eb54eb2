#include "slimbert/train/loop.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"
#include "slimbert/core/runtime.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/progress.h"

namespace fs = std::filesystem;

namespace slimbert {

LoopResult run_training(const LoopOptions& o, const Trainee& t, Sampler& data,
                        TrainingMethod& method) {
  if (o.steps <= 0 || o.accumulation <= 0)
    fail(o.what, ": steps and accumulation must be positive");
  require_writable_dir(o.out_dir);
  remove_stale_checkpoint_staging(o.out_dir);
  LoopResult result;
  // No validation yet: -inf, which state.json stores as null.
  double best = -std::numeric_limits<double>::infinity();
  int64_t step = 0;
  const std::string resume_dir = o.resume ? latest_checkpoint(o.out_dir) : "";
  if (o.resume && resume_dir.empty())
    std::cerr << o.what << ": --resume: no checkpoint in " << o.out_dir
              << "/checkpoints, starting fresh\n";
  t.model.train();
  if (!resume_dir.empty()) {
    load_state(t.model, load_weights(resume_dir), weights_path(resume_dir));
    // Epochs advance once per micro-batch at most.
    const StateLimits limits{o.steps, o.steps * o.accumulation, data.examples()};
    const ResumedState resumed = load_training_state(resume_dir, o.run, limits, t.optimizer);
    step = resumed.cursor.step;
    data.seek(resumed.cursor.epoch, resumed.cursor.offset);
    if (o.keep_best) {
      const JsonFields f(resumed.state, resume_dir + "/trainer_state/state.json");
      if (f.has("best")) best = f.number("best");
      result.best_step = f.integer("best_step", 0, step);
    }
    method.restore_state(resumed.state);
    std::cerr << o.what << ": resumed from " << resume_dir << " at step " << step << "\n";
  }
  auto save = [&] {
    nlohmann::json state = method.save_state();
    if (o.keep_best) {
      state["best"] = best;
      state["best_step"] = result.best_step;
    }
    save_training_checkpoint(o.out_dir, {step, data.epoch(), data.offset()}, o.run, state, t.config,
                             t.model, t.tokenizer, t.optimizer, o.keep_last);
  };

  const int64_t warmup = static_cast<int64_t>(o.warmup_fraction * static_cast<double>(o.steps));
  Progress progress(o.what, o.steps, (fs::path(o.out_dir) / "metrics.jsonl").string(), step);
  const double peak = measure_matmul_gflops() * 1e9;
  const auto started = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  int64_t tokens = 0, loss_n = 0;
  double flops = 0, loss_sum = 0;
  while (step < o.steps) {
    t.optimizer.zero_grad();
    double step_loss = 0;
    for (int64_t micro = 0; micro < o.accumulation; ++micro) {
      const TrainBatch batch = data.next();
      const double l = method.backward(batch, static_cast<double>(o.accumulation));
      if (!std::isfinite(l)) {
        const std::string last = latest_checkpoint(o.out_dir);
        fail(o.what, ": loss became ", l, " at step ", step + 1,
             "; stopping. The last good checkpoint is ",
             last.empty() ? std::string("none (no checkpoint saved yet)") : last,
             ". Try a lower --lr or stronger --clip.");
      }
      step_loss += l / static_cast<double>(o.accumulation);
      tokens += batch.tokens;
      flops += 3.0 * method.forward_flops(batch);
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
      progress.report(step, values, tokens, flops, peak);
      tokens = loss_n = 0;
      flops = loss_sum = 0;
    }
    if (o.validate.due(step, o.steps, epoch_end)) {
      result.validation = method.validate();
      progress.event(step, o.keep_best ? "dev" : "validation", result.validation);
      if (o.keep_best && result.validation.at("main") > best) {
        best = result.validation.at("main");
        result.best_step = step;
        result.best = result.validation;
        save_checkpoint((fs::path(o.out_dir) / "best").string(), t.config, t.model, t.tokenizer);
      }
    }
    const bool out_of_budget =
        step < o.steps &&
        ((o.max_minutes > 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >
              o.max_minutes * 60) ||
         (o.stop_after > 0 && step - first_step >= o.stop_after));
    if (o.save.due(step, o.steps, epoch_end) || out_of_budget) {
      save();
      progress.event(step, "checkpoint", {}, checkpoint_dir(o.out_dir, step));
    }
    if (out_of_budget) {
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

}  // namespace slimbert
