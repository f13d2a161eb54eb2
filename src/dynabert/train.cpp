// DynaBERT's distillation stages on the shared task-training loop.
#include <ATen/ATen.h>

#include <iostream>
#include <sstream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/model/history.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/optimizer.h"

namespace slimbert {

std::string to_string(DynaStage stage) {
  switch (stage) {
    case DynaStage::kWidth:
      return "train-width";
    case DynaStage::kWidthDepth:
      return "train";
    case DynaStage::kFinetune:
      break;
  }
  return "finetune";
}

std::vector<int64_t> distillation_targets(int64_t num_layers, double depth) {
  std::vector<int64_t> targets = kept_layers(num_layers, depth);
  targets.push_back(num_layers);
  return targets;
}

namespace {

struct TeacherOutput {
  std::vector<at::Tensor> hidden;
  at::Tensor logits;
};

// One DynaBERT stage: every sub-network on every batch, distilled from the fixed teacher
// (stages 1 and 2) or trained on the labels (stage 3); best/ by the summed dev metric.
class DynaStageMethod : public TrainingMethod {
 public:
  DynaStageMethod(const DynaTrainOptions& options, BertForSequenceClassification& student,
                  BertForSequenceClassification& teacher, std::vector<SubNet> subnets,
                  const TaskSpec& spec, const Tokenizer& tokenizer, const EncodedTask& train)
      : o_(options),
        student_(student),
        teacher_(teacher),
        subnets_(std::move(subnets)),
        spec_(spec),
        tokenizer_(tokenizer),
        train_(train),
        config_(student->bert->config()) {}

  double backward(const TrainBatch& batch, double micro_batches) override {
    // The teacher runs once per batch (per width for the paper's same-width variant).
    std::map<double, TeacherOutput> teacher_out;
    auto teacher_at = [&](double width) -> const TeacherOutput& {
      const double key = o_.same_width_teacher ? width : 1.0;
      auto it = teacher_out.find(key);
      if (it == teacher_out.end()) {
        at::NoGradGuard no_grad;
        Encoded enc = teacher_->bert->forward(batch.inputs, SubNet{key, 1.0});
        at::Tensor logits = teacher_->logits(enc);
        it = teacher_out.emplace(key, TeacherOutput{enc.hidden_states, logits}).first;
      }
      return it->second;
    };
    double total = 0;
    for (const SubNet& s : subnets_) {
      const Encoded enc = student_->bert->forward(batch.inputs, s);
      const at::Tensor logits = student_->logits(enc);
      at::Tensor loss;
      if (o_.stage == DynaStage::kFinetune) {
        loss = task_loss(logits, train_, batch.rows, 0, batch.rows.size(), spec_.regression);
      } else {
        const TeacherOutput& tout = teacher_at(s.width);
        // Soft cross-entropy at temperature 1, or MSE on the outputs for regression (the
        // reference silently uses 0 there).
        const at::Tensor pred = distillation_loss(logits, tout.logits, 1.0, spec_.regression);
        // Hidden states (embedding output first) against the mapped teacher states; the mean
        // includes padding positions, as the reference.
        const std::vector<int64_t> targets =
            distillation_targets(config_.num_hidden_layers, s.depth);
        at::Tensor hidden = at::zeros({}, logits.options());
        for (size_t j = 0; j < targets.size(); ++j)
          hidden = hidden + at::mse_loss(enc.hidden_states.at(j),
                                         tout.hidden.at(static_cast<size_t>(targets[j])));
        loss = o_.lambda1 * pred + o_.lambda2 * hidden;
      }
      backward_pass(loss, batch, micro_batches, &s == &subnets_.back());
      const double l = loss.item<double>();
      auto& acc = subnet_losses_[subnet_name(s)];
      acc.first += l;
      acc.second += 1;
      total += l;
    }
    return total / static_cast<double>(subnets_.size());
  }

  double forward_flops(const TrainBatch& batch) const override {
    const int64_t B = batch.inputs.input_ids.size(0), T = batch.inputs.input_ids.size(1);
    double f = 0;
    for (const SubNet& s : subnets_) f += encoder_flops(config_, T, s);
    if (o_.stage != DynaStage::kFinetune)
      f += encoder_flops(config_, T) * (o_.same_width_teacher ? o_.widths.size() : 1) / 3.0;
    return f * static_cast<double>(B);
  }

  std::map<std::string, double> report() override {
    std::map<std::string, double> out;
    for (auto& [name, acc] : subnet_losses_)
      if (acc.second > 0) out["loss_" + name] = acc.first / static_cast<double>(acc.second);
    subnet_losses_.clear();
    return out;
  }

  std::map<std::string, double> validate() override {
    std::map<std::string, double> out;
    double sum = 0;
    for (const SubNet& s : subnets_) {
      const double main =
          evaluate_task(student_, tokenizer_, spec_, "dev", o_.train.max_length, 64, s)
              .metrics.at("main");
      out[subnet_name(s)] = main;
      sum += main;
    }
    out["main"] = sum;  // the reference selects by the summed metric
    student_->train();
    return out;
  }

 private:
  const DynaTrainOptions& o_;
  BertForSequenceClassification& student_;
  BertForSequenceClassification& teacher_;  // null in stage 3
  std::vector<SubNet> subnets_;
  const TaskSpec& spec_;
  const Tokenizer& tokenizer_;
  const EncodedTask& train_;
  const BertConfig& config_;
  std::map<std::string, std::pair<double, int64_t>> subnet_losses_;  // since the last report
};

}  // namespace

DynaTrainOptions stage_defaults(DynaStage stage) {
  // The reference recipe (ALGORITHMS.md §B.9): AdamW 2e-5, no warm-up, no decay.
  DynaTrainOptions o;
  o.stage = stage;
  o.train.lr = 2e-5;
  o.train.warmup_fraction = 0;
  o.train.weight_decay = 0;
  o.lambda2 = stage == DynaStage::kWidth ? 0.1 : 1.0;
  return o;
}

FinetuneResult dynabert_train(const DynaTrainOptions& o) {
  const FinetuneOptions& t = o.train;
  if (o.widths.empty() || o.depths.empty()) fail("dynabert: empty width or depth list");
  const Tokenizer tokenizer = Tokenizer::from_dir(t.model_dir);
  at::manual_seed(t.seed);
  BertForSequenceClassification student = load_classifier(t.model_dir);
  BertConfig config = student->bert->config();
  check_tokenizer_fits(tokenizer, config, t.model_dir);
  add_history(config, "dynabert " + to_string(o.stage));
  const TaskSpec spec = task_for_model(config, t.task, t.data_dir, t.skip_bad_rows);
  const TaskData train_data = load_train_split(spec, t);
  const EncodedTask train = encode_task(tokenizer, spec, train_data, t.max_length, true);

  BertForSequenceClassification teacher{nullptr};
  if (o.stage != DynaStage::kFinetune) {
    if (o.teacher_dir.empty()) fail("dynabert ", to_string(o.stage), ": a teacher is required");
    teacher = load_classifier(o.teacher_dir);
    teacher->eval();
    const BertConfig& tc = teacher->bert->config();
    if (tc.num_labels() != config.num_labels() || tc.hidden_size != config.hidden_size)
      fail(o.teacher_dir, ": the teacher (", tc.num_labels(), " labels, hidden ", tc.hidden_size,
           ") does not match the student (", config.num_labels(), " labels, hidden ",
           config.hidden_size, ")");
  }
  std::vector<SubNet> subnets;
  const std::vector<double> depths =
      o.stage == DynaStage::kWidth ? std::vector<double>{1.0} : o.depths;
  for (double d : depths)
    for (double w : o.widths) subnets.push_back({w, d});

  AdamW optimizer(bert_param_groups(named_parameters(*student), t.lr, t.weight_decay),
                  AdamOptions{});
  if (is_main_rank()) {
    std::cerr << "dynabert " << to_string(o.stage) << ": " << subnets.size()
              << " sub-networks per batch";
    if (o.stage != DynaStage::kFinetune)
      std::cerr << ", teacher " << o.teacher_dir
                << (o.same_width_teacher ? " at each width" : " at full width") << ", lambda1 "
                << o.lambda1 << ", lambda2 " << o.lambda2;
    std::cerr << "\n";
  }
  DynaStageMethod method(o, student, teacher, subnets, spec, tokenizer, train);
  RunSignature run{"dynabert " + to_string(o.stage)};
  o.sign(run);
  return train_task(run, t, Trainee{*student, optimizer, config, tokenizer}, train, method);
}

}  // namespace slimbert
