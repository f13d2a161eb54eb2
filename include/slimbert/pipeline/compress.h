// `slimbert compress`: from a fine-tuned BERT to deployable smaller models in one call. The
// pipeline runs the library's stages in order (rewiring and the DynaBERT stages, or WID, its
// merge and the student's fine-tuning, or both), scores the result over a (width, depth) grid,
// profiles its latency, exports the Pareto-optimal sub-networks and writes one report page.
// Every finished stage is recorded in OUT/compress.json and skipped on --resume; the stage that
// was running continues from its own checkpoints.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "slimbert/core/runtime.h"
#include "slimbert/model/bert.h"

namespace slimbert {

enum class CompressMethod { kDynaBert, kWid, kWidDynaBert };
CompressMethod parse_compress_method(const std::string& name);  // dynabert | wid | wid+dynabert
std::string to_string(CompressMethod method);

// A hyper-parameter override of `compress`, as declared once in CompressOptions::Overrides.
struct OverrideSpec {
  enum class Applies { kAll, kDynaBert, kWid };  // the methods whose stages it sets
  const char* key;   // its name in compress.json's options (the resume signature)
  const char* flag;  // its command-line flag
  const char* help;
  Applies applies;
  double lo = 0, hi = 0;                  // a number: the accepted range
  std::vector<std::string> choices = {};  // a string: the values; a boolean: false, then true
  bool applies_to(CompressMethod method) const;
};

struct CompressOptions {
  std::string model_dir;  // the fine-tuned task model (the teacher)
  std::string task, data_dir;
  std::string out_dir;
  CompressMethod method = CompressMethod::kDynaBert;
  // WID: MLM shards and the pretrained masked LM the task model was fine-tuned from.
  std::string corpus, mlm_teacher;
  int64_t wid_steps = 2000;
  int64_t target_hidden = 0;  // 0: half the teacher's hidden size (the nearest valid one)
  // DynaBERT: the sub-networks trained, scored and profiled.
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};
  std::vector<double> depths = {1.0, 0.75, 0.5};
  bool stage3 = true;  // every sub-network fine-tuned on the labels after the distillation
  // Learning rates tried by every training stage; each stage keeps the best on dev.
  std::vector<double> lrs = {1e-4};
  int64_t epochs = 1;          // per DynaBERT stage
  int64_t student_epochs = 3;  // the WID student's fine-tuning
  int64_t batch_size = 32, max_length = 128;
  int64_t max_train_examples = 0;  // > 0: a seeded subset of the training set
  // Hyper-parameters past the recipes: unset, each stage keeps its own default (stage_defaults,
  // short_run_wid_options, finetune's), the values docs/RESULTS.md measured.
  struct Overrides {
    std::optional<double> warmup, weight_decay, clip;      // every task-training stage
    std::optional<double> lambda1;                         // DynaBERT stages 1 and 2: logit loss
    std::optional<double> stage1_lambda2, stage2_lambda2;  // hidden-state + embedding loss
    std::optional<bool> same_width_teacher;           // stage 2's teacher at the student's width
    std::optional<double> kd_weight, kd_temperature;  // the WID student's fine-tuning
    // WID: base and compactor learning rates, the pull on removed entries, the mask schedule.
    std::optional<double> wid_lr, compactor_lr, wid_lambda, zero_by;
    std::optional<int64_t> w_step;
    std::optional<std::string> strategy;  // dim | head

    // Every override once, as f(spec, field): the command line's flags and the resume signature
    // (compress.json) are both made from this list; the stages read the fields.
    template <typename Self, typename F>
    static void each(Self& s, F&& f) {
      using A = OverrideSpec::Applies;
      const double frac = 1.0, big = 1e9;
      f(OverrideSpec{"warmup", "--warmup",
                     "warm-up fraction of every task-training stage (default: DynaBERT stages 0, "
                     "the WID student 0.1)",
                     A::kAll, 0, frac},
        s.warmup);
      f(OverrideSpec{"weight_decay", "--weight-decay",
                     "decoupled weight decay of every task-training stage (default: DynaBERT "
                     "stages 0, the WID student 0.01)",
                     A::kAll, 0, big},
        s.weight_decay);
      f(OverrideSpec{"clip", "--clip",
                     "max gradient norm of every task-training stage (default 1; 0 = off)", A::kAll,
                     0, big},
        s.clip);
      f(OverrideSpec{"lambda1", "--lambda1",
                     "dynabert: weight of the logit loss in stages 1 and 2 (default 1)",
                     A::kDynaBert, 0, big},
        s.lambda1);
      f(OverrideSpec{"stage1_lambda2", "--stage1-lambda2",
                     "dynabert: weight of the hidden-state and embedding loss in stage 1 (default "
                     "0.1)",
                     A::kDynaBert, 0, big},
        s.stage1_lambda2);
      f(OverrideSpec{"stage2_lambda2", "--stage2-lambda2",
                     "dynabert: weight of the hidden-state and embedding loss in stage 2 (default "
                     "1)",
                     A::kDynaBert, 0, big},
        s.stage2_lambda2);
      f(OverrideSpec{"same_width_teacher",
                     "--teacher-width",
                     "dynabert: stage 2's teacher at full width (default, the reference code) or "
                     "at the student's width (same, the paper)",
                     A::kDynaBert,
                     0,
                     0,
                     {"full", "same"}},
        s.same_width_teacher);
      f(OverrideSpec{"kd_weight", "--kd-weight",
                     "wid: share of the teacher's soft targets in the student's fine-tuning loss "
                     "(default 0.5)",
                     A::kWid, 0, frac},
        s.kd_weight);
      f(OverrideSpec{"kd_temperature", "--kd-temperature",
                     "wid: softmax temperature of those soft targets (default 1)", A::kWid, 1e-3,
                     1e3},
        s.kd_temperature);
      f(OverrideSpec{"wid_lr", "--wid-lr",
                     "wid: peak learning rate of the teacher's weights (default 1e-4)", A::kWid, 0,
                     1},
        s.wid_lr);
      f(OverrideSpec{"compactor_lr", "--compactor-lr",
                     "wid: learning rate of the compactors (default 1e-4)", A::kWid, 0, 1},
        s.compactor_lr);
      f(OverrideSpec{"wid_lambda", "--wid-lambda",
                     "wid: pull of removed rows and columns towards zero (default 20)", A::kWid, 0,
                     big},
        s.wid_lambda);
      f(OverrideSpec{"zero_by", "--zero-by",
                     "wid: after the target, removed entries also fall linearly to exactly zero, "
                     "reached this fraction of the way to the last step (default 0 = off)",
                     A::kWid, 0, frac},
        s.zero_by);
      f(OverrideSpec{"w_step", "--w-step",
                     "wid: steps between mask updates (default: --wid-steps / 32)", A::kWid, 1,
                     static_cast<double>(int64_t{1} << 40)},
        s.w_step);
      f(OverrideSpec{"strategy",
                     "--strategy",
                     "wid: dim (fewer dims per head, default) or head (fewer heads) for attention",
                     A::kWid,
                     0,
                     0,
                     {"dim", "head"}},
        s.strategy);
    }
  } set;
  int64_t rewire_examples = 2000;
  double budget_ms = 0;  // > 0: choose the most accurate sub-network under it at batch 1
  bool int8 = false;     // also score, time and profile the int8 runtime
  int64_t latency_iters = 10;
  uint64_t seed = 0;
  int64_t log_every = 50;
  bool resume = false;
  bool keep_stages = false;  // keep each stage's model (by default only their logs stay)
  bool skip_bad_rows = false;
  std::string command;  // the command line, for the report
  // Threads: training on OpenBLAS; the grid and the profile run the fp32 engine measured faster
  // here (infer::configure_engine) and int8 on libtorch's pool, and hand the threads back after.
  RuntimeConfig runtime;
};

struct CompressedModel {
  SubNet subnet;
  std::string dir;
  double dev = 0;         // dev main score
  double size_mb = 0;     // model.safetensors
  double latency_ms = 0;  // p50 at batch 1 x max_length, measured in the grid
  bool chosen = false;
};

struct CompressResult {
  std::string model_dir;  // every sub-network (DynaBERT) or the student (WID), with its profile
  std::vector<CompressedModel> exports;
  const CompressedModel& chosen() const;
  double teacher_dev = 0;
  std::string metric;  // the task's main metric
  std::string report;  // OUT/report.html
};

CompressResult compress(const CompressOptions& options);

}  // namespace slimbert
