#include "slimbert/train/finetune.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/core/runtime.h"
#include "slimbert/data/metrics.h"
#include "slimbert/data/mlm.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/progress.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

std::string join_labels(const std::vector<std::string>& labels) {
  std::string s;
  for (const auto& l : labels) s += (s.empty() ? "" : ", ") + l;
  return s;
}

}  // namespace

at::Tensor task_loss(const at::Tensor& logits, const EncodedTask& data,
                     const std::vector<size_t>& idx, size_t begin, size_t end, bool regression) {
  if (regression) {
    std::vector<float> v;
    for (size_t i = begin; i < end; ++i) v.push_back(static_cast<float>(data.values[idx[i]]));
    return at::mse_loss(logits.view(-1), at::tensor(v).to(logits.device()));
  }
  std::vector<int64_t> l;
  for (size_t i = begin; i < end; ++i) l.push_back(data.labels[idx[i]]);
  return at::cross_entropy_loss(logits, at::tensor(l).to(logits.device()));
}

TaskData load_train_split(const TaskSpec& spec, const FinetuneOptions& o) {
  TaskData data = spec.load("train");
  if (o.max_train_examples > 0 &&
      static_cast<int64_t>(data.examples.size()) > o.max_train_examples) {
    std::mt19937_64 rng(mix_seed(o.seed, 11));
    std::shuffle(data.examples.begin(), data.examples.end(), rng);
    data.examples.resize(static_cast<size_t>(o.max_train_examples));
  }
  return data;
}

TaskSpec task_for_model(const BertConfig& config, const std::string& task,
                        const std::string& data_dir, bool skip_bad_rows) {
  TaskSpec spec = TaskSpec::make(task, data_dir, skip_bad_rows);
  if (config.is_regression()) {
    if (!spec.regression)
      fail("the model is a regressor (1 output) but task '", task, "' has classes");
    return spec;
  }
  if (spec.regression)
    fail("task '", task, "' is a regression task but the model has ", config.num_labels(),
         " labels");
  std::vector<std::string> labels;
  for (int64_t i = 0; i < config.num_labels(); ++i) labels.push_back(config.label_name(i));
  for (const auto& l : spec.labels)
    if (std::find(labels.begin(), labels.end(), l) == labels.end())
      fail("task label '", l, "' is not one of the model's labels {", join_labels(labels), "}");
  spec.labels = labels;
  return spec;
}

at::Tensor predict_logits(BertForSequenceClassification& model, const std::vector<Encoding>& inputs,
                          int64_t pad_id, int64_t batch_size, const SubNet& subnet) {
  const bool was_training = model->is_training();
  model->eval();
  at::NoGradGuard no_grad;
  const at::Tensor out =
      predict_logits([&](const Batch& batch) { return model->forward(batch, subnet); }, inputs,
                     pad_id, batch_size);
  if (was_training) model->train();
  return out;
}

EvalReport evaluate_task(BertForSequenceClassification& model, const Tokenizer& tokenizer,
                         const TaskSpec& spec, const std::string& split, int64_t max_length,
                         int64_t batch_size, const SubNet& subnet) {
  const bool was_training = model->is_training();
  model->eval();
  at::NoGradGuard no_grad;
  EvalReport r = evaluate_task([&](const Batch& batch) { return model->forward(batch, subnet); },
                               tokenizer, spec, split, max_length, batch_size);
  if (was_training) model->train();
  return r;
}

at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             double temperature, bool regression) {
  if (regression) return at::mse_loss(student_logits, teacher_logits);
  const at::Tensor soft = at::softmax(teacher_logits / temperature, -1);
  return -(soft * at::log_softmax(student_logits / temperature, -1)).sum(-1).mean() *
         (temperature * temperature);
}

at::Tensor teacher_logits(const std::string& teacher_dir, const TaskSpec& spec,
                          const TaskData& data, int64_t max_length) {
  BertForSequenceClassification teacher = load_classifier(teacher_dir);
  const BertConfig& tc = teacher->bert->config();
  // The teacher's own label order and tokenizer: only its predictions cross over.
  std::vector<std::string> labels;
  const bool regression = tc.is_regression();
  if (!regression)
    for (int64_t i = 0; i < tc.num_labels(); ++i) labels.push_back(tc.label_name(i));
  std::vector<std::string> sorted_teacher = labels, sorted_task = spec.labels;
  std::sort(sorted_teacher.begin(), sorted_teacher.end());
  std::sort(sorted_task.begin(), sorted_task.end());
  if (regression != spec.regression || sorted_teacher != sorted_task)
    fail(teacher_dir, ": the teacher ",
         regression
             ? "is a regressor"
             : "has " + std::to_string(labels.size()) + " labels {" + join_labels(labels) + "}",
         " but the task ",
         spec.regression ? "is a regression task"
                         : "has " + std::to_string(spec.labels.size()) + " labels {" +
                               join_labels(spec.labels) + "}");
  const Tokenizer tokenizer = Tokenizer::from_dir(teacher_dir);
  check_tokenizer_fits(tokenizer, tc, teacher_dir);
  std::vector<Encoding> inputs;
  for (const auto& e : data.examples)
    inputs.push_back(
        tokenizer.encode(e.text_a, e.text_b, EncodeOptions{max_length, Truncation::kLongestFirst}));
  const at::Tensor logits = predict_logits(teacher, inputs, tokenizer.pad_id(), 64);
  if (spec.regression) return logits;
  std::vector<int64_t> columns;
  for (const auto& l : spec.labels)
    columns.push_back(std::find(labels.begin(), labels.end(), l) - labels.begin());
  return logits.index_select(1, at::tensor(columns));
}

TaskSampler::TaskSampler(const EncodedTask& data, int64_t batch_size, uint64_t seed, int64_t pad_id)
    : data_(data), batch_size_(batch_size), seed_(seed), pad_id_(pad_id) {
  seek(0, 0);
}

void TaskSampler::seek(int64_t epoch, int64_t offset) {
  epoch_ = epoch;
  offset_ = offset;
  order_.resize(data_.inputs.size());
  std::iota(order_.begin(), order_.end(), 0);
  std::mt19937_64 rng(mix_seed(seed_, static_cast<uint64_t>(epoch), 7));
  std::shuffle(order_.begin(), order_.end(), rng);
}

TrainBatch TaskSampler::next() {
  // The epoch turns over when the next batch is drawn, so that a checkpoint at an epoch's end
  // records that epoch, finished.
  if (offset_ >= examples()) seek(epoch_ + 1, 0);
  const size_t b = static_cast<size_t>(offset_);
  const size_t e = std::min(order_.size(), b + static_cast<size_t>(batch_size_));
  TrainBatch batch;
  batch.rows.assign(order_.begin() + static_cast<std::ptrdiff_t>(b),
                    order_.begin() + static_cast<std::ptrdiff_t>(e));
  Batch all = collate(data_.inputs, batch.rows, pad_id_);
  offset_ = static_cast<int64_t>(e);
  if (distributed()) {
    // This rank's rows, padded as the global batch is: losses that average over padded
    // positions (DynaBERT's hidden-state MSE) then add up to the global batch's.
    const int64_t n = static_cast<int64_t>(batch.rows.size()), W = dist().world, r = dist().rank;
    const int64_t lo = n * r / W, hi = n * (r + 1) / W;
    batch.rows = std::vector<size_t>(batch.rows.begin() + lo, batch.rows.begin() + hi);
    batch.share = static_cast<double>(hi - lo) / static_cast<double>(n);
    if (hi == lo) return batch;
    all = Batch{all.input_ids.narrow(0, lo, hi - lo), all.token_type_ids.narrow(0, lo, hi - lo),
                all.attention_mask.narrow(0, lo, hi - lo)};
  }
  // Moved once per step: DynaBERT runs a dozen sub-networks on it.
  batch.inputs = all.to(compute_device());
  batch.tokens = batch.inputs.attention_mask.sum().item<int64_t>();
  return batch;
}

FinetuneResult train_task(RunSignature run, const FinetuneOptions& o, const Trainee& t,
                          const EncodedTask& train, TrainingMethod& method) {
  const std::string what = run.command;
  const int64_t examples = static_cast<int64_t>(train.inputs.size());
  const int64_t per_epoch = (examples + o.batch_size - 1) / o.batch_size;
  LoopOptions loop;
  loop.take_common(o);
  loop.what = what;
  loop.steps = per_epoch * o.epochs;
  loop.validate = Every{o.eval_every, o.eval_every == 0, true};
  loop.save = Every{0, o.keep_last > 0, true};
  loop.keep_best = true;
  run.add("steps", loop.steps, OnResume::kDefining);
  run.add("train_examples", examples, OnResume::kDefining);
  loop.run = std::move(run);
  TaskSampler data(train, o.batch_size, o.seed, t.tokenizer.pad_id());
  const LoopResult r = run_training(loop, t, data, method);
  FinetuneResult result;
  result.step = r.step;
  result.finished = r.finished;
  result.best_step = r.best_step;
  result.best_dev.metrics = r.best;
  if (r.finished && is_main_rank())
    save_checkpoint((fs::path(o.out_dir) / "model").string(), t.config, t.model, t.tokenizer,
                    t.save);
  return result;
}

namespace {

// Fine-tuning on the labels, optionally distilled from a fine-tuned teacher's predictions.
class Finetuning : public TrainingMethod {
 public:
  Finetuning(BertForSequenceClassification& model, const FinetuneOptions& options,
             const TaskSpec& spec, const Tokenizer& tokenizer, const EncodedTask& train,
             at::Tensor soft_targets)
      : model_(model),
        o_(options),
        spec_(spec),
        tokenizer_(tokenizer),
        train_(train),
        soft_targets_(std::move(soft_targets)) {}

  double backward(const TrainBatch& batch, double micro_batches) override {
    const at::Tensor logits = model_->forward(batch.inputs);
    at::Tensor loss = task_loss(logits, train_, batch.rows, 0, batch.rows.size(), spec_.regression);
    if (soft_targets_.defined()) {
      const std::vector<int64_t> rows(batch.rows.begin(), batch.rows.end());
      const at::Tensor target = soft_targets_.index_select(0, at::tensor(rows)).to(logits.device());
      const at::Tensor kd =
          distillation_loss(logits, spec_.regression ? target.view(logits.sizes()) : target,
                            o_.kd_temperature, spec_.regression);
      task_sum_ += loss.item<double>();
      kd_sum_ += kd.item<double>();
      ++parts_n_;
      loss = (1 - o_.kd_weight) * loss + o_.kd_weight * kd;
    }
    backward_pass(loss, batch, micro_batches);
    return loss.item<double>();
  }

  double forward_flops(const TrainBatch& batch) const override {
    return encoder_flops(model_->bert->config(), batch.inputs.input_ids.size(1)) *
           static_cast<double>(batch.inputs.input_ids.size(0));
  }

  std::map<std::string, double> report() override {
    if (parts_n_ == 0) return {};
    std::map<std::string, double> parts = {{"loss_task", task_sum_ / parts_n_},
                                           {"loss_kd", kd_sum_ / parts_n_}};
    task_sum_ = kd_sum_ = 0;
    parts_n_ = 0;
    return parts;
  }

  std::map<std::string, double> validate() override {
    return evaluate_task(model_, tokenizer_, spec_, "dev", o_.max_length, 64).metrics;
  }

 private:
  BertForSequenceClassification& model_;
  const FinetuneOptions& o_;
  const TaskSpec& spec_;
  const Tokenizer& tokenizer_;
  const EncodedTask& train_;
  at::Tensor soft_targets_;  // undefined: no distillation
  double task_sum_ = 0, kd_sum_ = 0;
  int64_t parts_n_ = 0;
};

}  // namespace

FinetuneResult finetune(const FinetuneOptions& o) {
  if (o.epochs <= 0 || o.batch_size <= 0) fail("epochs and batch size must be positive");
  // Inputs are checked before the output directory exists: a typo leaves nothing behind.
  const Tokenizer tokenizer = Tokenizer::from_dir(o.model_dir);
  const TaskSpec spec = TaskSpec::make(o.task, o.data_dir, o.skip_bad_rows);
  BertConfig config = load_config_dir(o.model_dir);
  check_tokenizer_fits(tokenizer, config, o.model_dir);
  if (o.max_length > config.max_sequence_length())
    fail("--max-length ", o.max_length, " exceeds the model's longest input of ",
         config.max_sequence_length(), " tokens (max_position_embeddings)");
  require_writable_dir(o.out_dir);
  if (spec.regression) {
    config.set_num_labels(1);
    config.problem_type = "regression";
  } else {
    config.id2label.clear();
    for (size_t i = 0; i < spec.labels.size(); ++i)
      config.id2label[static_cast<int64_t>(i)] = spec.labels[i];
    config.problem_type = "single_label_classification";
  }
  config.architectures = {"BertForSequenceClassification"};

  const TaskData train_data = load_train_split(spec, o);
  // Every rank reads the same data and options: rank 0 alone says so.
  if (train_data.skipped_rows && is_main_rank())
    std::cerr << "finetune: skipped " << train_data.skipped_rows << " malformed rows in "
              << train_data.source << "\n";
  const EncodedTask train = encode_task(tokenizer, spec, train_data, o.max_length, true);

  at::manual_seed(o.seed);
  TensorMap weights = load_weights(o.model_dir);
  check_config_matches_weights(load_config_dir(o.model_dir), weights, weights_path(o.model_dir));
  BertForSequenceClassification model(config);
  init_weights(*model, config, o.seed);
  {
    // A classifier for other labels is replaced by a new one.
    auto it = weights.find("classifier.weight");
    if (it != weights.end() && it->second.size(0) != config.num_labels()) {
      weights.erase("classifier.weight");
      weights.erase("classifier.bias");
    }
    LoadOptions lo;
    lo.init_missing_heads = true;
    load_state(*model, weights, weights_path(o.model_dir), lo);
  }
  model->to(compute_device());
  AdamW optimizer(bert_param_groups(named_parameters(*model), o.lr, o.weight_decay), AdamOptions{});
  const bool distil = !o.distil_from.empty();
  if (distil && (o.kd_weight < 0 || o.kd_weight > 1 || o.kd_temperature <= 0))
    fail("--kd-weight must be in [0, 1] and --kd-temperature positive (got ", o.kd_weight, ", ",
         o.kd_temperature, ")");
  // The teacher is fixed and dropout-free, so its predictions are computed once, not per step.
  at::Tensor soft_targets;
  if (distil) {
    soft_targets = teacher_logits(o.distil_from, spec, train_data, o.max_length);
    if (is_main_rank())
      std::cerr << "finetune: distilling from " << o.distil_from << " (weight " << o.kd_weight
                << ", temperature " << o.kd_temperature << ")\n";
  }
  Finetuning method(model, o, spec, tokenizer, train, soft_targets);
  RunSignature run{"finetune " + spec.display_name()};
  o.sign(run);
  FinetuneResult result =
      train_task(run, o, Trainee{*model, optimizer, config, tokenizer}, train, method);
  if (!result.finished || !is_main_rank()) return result;

  // Report the best model on dev, and on test when the test split is labelled.
  BertForSequenceClassification best_model =
      load_classifier((fs::path(o.out_dir) / "best").string());
  nlohmann::json report;
  report["task"] = spec.display_name();
  report["format"] = o.task;
  report["best_step"] = result.best_step;
  report["training"] = {{"model", o.model_dir}, {"epochs", o.epochs},
                        {"lr", o.lr},           {"batch_size", o.batch_size},
                        {"seed", o.seed},       {"max_length", o.max_length}};
  if (distil) {
    report["training"]["distil_from"] = o.distil_from;
    report["training"]["kd_weight"] = o.kd_weight;
    report["training"]["kd_temperature"] = o.kd_temperature;
  }
  for (const std::string split : {"dev", "test"}) {
    if (!fs::exists(spec.path(split))) continue;
    try {
      EvalReport r = evaluate_task(best_model, tokenizer, spec, split, o.max_length, 64);
      report[split] = r.metrics;
      report[split]["examples"] = r.examples;
      if (split == "dev") result.best_dev = r;
    } catch (const InputError& e) {
      if (split == "dev") throw;
      std::cerr << "finetune: test split not scored: " << e.what()
                << "\n";  // GLUE test files are unlabelled
    }
  }
  write_file_atomic((fs::path(o.out_dir) / "eval.json").string(), report.dump(2) + "\n");
  return result;
}

LrChoice choose_lr_on_dev(
    const std::string& out_dir, const std::vector<double>& lrs,
    const std::function<FinetuneResult(double lr, const std::string& dir)>& train) {
  if (lrs.empty()) fail("no learning rate to try");
  LrChoice best;
  bool first = true;
  nlohmann::json tried = nlohmann::json::array();
  for (double lr : lrs) {
    std::ostringstream name;
    name << "lr-" << lr;
    const std::string dir = lrs.size() == 1 ? out_dir : (fs::path(out_dir) / name.str()).string();
    if (lrs.size() > 1 && is_main_rank())
      std::cerr << "learning rate " << lr << ": " << dir << "\n";
    const FinetuneResult r = train(lr, dir);
    if (!r.finished) return {lr, dir, r, best.tried};  // stopped early: resume continues here
    const double score = r.best_dev.metrics.count("main") ? r.best_dev.metrics.at("main") : 0.0;
    best.tried.emplace_back(lr, score);
    tried.push_back({{"lr", lr}, {"dir", dir}, {"dev", score}, {"best_step", r.best_step}});
    if (first || score > best.result.best_dev.metrics.at("main")) {
      best.lr = lr;
      best.dir = dir;
      best.result = r;
      first = false;
    }
  }
  if (lrs.size() > 1 && is_main_rank()) {
    write_file_atomic(
        (fs::path(out_dir) / "lr-choice.json").string(),
        nlohmann::json({{"chosen", best.lr}, {"dir", best.dir}, {"tried", tried}}).dump(2) + "\n");
    std::cerr << "learning rate chosen on dev: " << best.lr << " (";
    for (size_t i = 0; i < best.tried.size(); ++i)
      std::cerr << (i ? ", " : "") << best.tried[i].first << ": " << best.tried[i].second;
    std::cerr << ")\n";
  }
  return best;
}

}  // namespace slimbert
