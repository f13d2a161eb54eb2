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
