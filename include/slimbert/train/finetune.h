// Fine-tuning a sequence classifier (or regressor) on a labelled task, and evaluation.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "slimbert/data/batching.h"
#include "slimbert/data/tasks.h"
#include "slimbert/infer/run.h"
#include "slimbert/model/bert.h"
#include "slimbert/text/tokenizer.h"
#include "slimbert/train/loop.h"

namespace slimbert {

struct FinetuneOptions {
  std::string model_dir;  // pretrained checkpoint (any head; the classifier is new if absent)
  std::string task;       // GLUE name or tsv / csv / jsonl
  std::string data_dir;   // task files
  std::string out_dir;    // checkpoints/, best/, model/, metrics.jsonl, eval.json
  int64_t epochs = 3;
  int64_t batch_size = 32;
  int64_t max_length = 128;
  double lr = 1e-4;
  double weight_decay = 0.01;
  double warmup_fraction = 0.1;
  double clip = 1.0;
  uint64_t seed = 0;
  int64_t log_every = 50;
  int64_t eval_every = 0;  // steps between dev evaluations; 0 = once per epoch
  int64_t keep_last = 1;
  bool resume = false;
  bool skip_bad_rows = false;
  int64_t max_train_examples = 0;  // > 0: a seeded random subset of the training set
  int64_t stop_after = 0;          // > 0: checkpoint and stop after this many steps of this run
  // Task-specific distillation: a fine-tuned teacher on the same task whose predictions on the
  // training set are soft targets. loss = (1 - kd_weight) * task + kd_weight * distillation.
  std::string distil_from;
  double kd_weight = 0.5;
  double kd_temperature = 1.0;

  // The options a resume compares (the loop adds the steps and the training set's size).
  void sign(RunSignature& run) const {
    run.add_common(*this);
    run.add("epochs", epochs, OnResume::kDefining);
    run.add("max_length", max_length, OnResume::kDefining);
    run.add("kd_weight", kd_weight, OnResume::kAdjustable);
    run.add("kd_temperature", kd_temperature, OnResume::kAdjustable);
  }
};

struct FinetuneResult {
  int64_t step = 0;
  bool finished = false;
  int64_t best_step = 0;
  EvalReport best_dev;
};

FinetuneResult finetune(const FinetuneOptions& options);

// The learning rate chosen on dev: `train(lr, dir)` runs once per rate, in `out_dir` itself for
// a single rate, else in out_dir/lr-<rate> (lr-choice.json lists the scores); the best dev score
// wins, the first rate on ties. Runs that finished before are resumed at their end (cheap).
struct LrChoice {
  double lr = 0;
  std::string dir;  // the winning run's directory (its best/ is the model)
  FinetuneResult result;
  std::vector<std::pair<double, double>> tried;  // (lr, best dev score)
};
LrChoice choose_lr_on_dev(
    const std::string& out_dir, const std::vector<double>& lrs,
    const std::function<FinetuneResult(double lr, const std::string& dir)>& train);

// The training split, or a subset of `options.max_train_examples` drawn with `options.seed`.
TaskData load_train_split(const TaskSpec& spec, const FinetuneOptions& options);
// Cross-entropy (or MSE for regression) of `logits` against rows idx[begin, end).
at::Tensor task_loss(const at::Tensor& logits, const EncodedTask& data,
                     const std::vector<size_t>& idx, size_t begin, size_t end, bool regression);

// Soft cross-entropy between temperature-scaled distributions, times T^2 so that gradients keep
// their size across temperatures (Hinton et al.); MSE between the outputs for regression.
at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             double temperature, bool regression);

// predict_logits (infer/run.h) with a training model at `subnet`, without dropout or gradients.
at::Tensor predict_logits(BertForSequenceClassification& model, const std::vector<Encoding>& inputs,
                          int64_t pad_id, int64_t batch_size, const SubNet& subnet = {});

// A fine-tuned teacher's logits on `data` ([examples, labels.size()], host), columns reordered to
// `labels` (the student's order); the teacher must be fine-tuned on the same label set.
at::Tensor teacher_logits(const std::string& teacher_dir, const TaskSpec& spec,
                          const TaskData& data, int64_t max_length);

// evaluate_task (infer/run.h) with a training model at `subnet`.
EvalReport evaluate_task(BertForSequenceClassification& model, const Tokenizer& tokenizer,
                         const TaskSpec& spec, const std::string& split, int64_t max_length,
                         int64_t batch_size, const SubNet& subnet = {});

// The task spec with the label order of a fine-tuned model's config.
TaskSpec task_for_model(const BertConfig& config, const std::string& task,
                        const std::string& data_dir, bool skip_bad_rows = false);

// The training examples in a seeded shuffle per epoch, in batches moved to the compute device.
class TaskSampler : public Sampler {
 public:
  TaskSampler(const EncodedTask& data, int64_t batch_size, uint64_t seed, int64_t pad_id);
  TrainBatch next() override;
  int64_t examples() const override { return static_cast<int64_t>(data_.inputs.size()); }
  int64_t epoch() const override { return epoch_; }
  int64_t offset() const override { return offset_; }
  void seek(int64_t epoch, int64_t offset) override;

 private:
  const EncodedTask& data_;
  int64_t batch_size_;
  uint64_t seed_;
  int64_t pad_id_;
  int64_t epoch_ = 0, offset_ = 0;
  std::vector<size_t> order_;
};

// Runs `method` on the loop over `train` with the epochs, schedule, dev evaluation (best/ by
// "main", at each epoch's end or every eval_every steps) and checkpoints of `options`; writes
// model/ when it finishes. `run` names the run and holds the options its method declared
// (options.sign() and the method's own); the steps and the training set's size are added.
FinetuneResult train_task(RunSignature run, const FinetuneOptions& options, const Trainee& trainee,
                          const EncodedTask& train, TrainingMethod& method);

}  // namespace slimbert
