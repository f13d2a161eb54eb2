// DynaBERT's distillation stages on the shared task-training loop.
#include <ATen/ATen.h>

#include <functional>
#include <iostream>
#include <optional>
#include <sstream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/sentence_transformers.h"
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

// A model as the stages see it: the encoder that is sliced, what the model outputs from the
// encoder's states (a classifier's logits, an embedding model's sentence vectors), and the
// module that holds both.
struct StageModel {
  torch::nn::Module* whole = nullptr;
  BertModel encoder{nullptr};
  std::function<at::Tensor(const Encoded&, const Batch&)> output;
};

// How outputs are compared and sub-networks scored.
struct StageObjective {
  // The student's output against the teacher's (stages 1 and 2).
  std::function<at::Tensor(const at::Tensor& student, const at::Tensor& teacher)> distil;
  // The output against the batch's labels (stage 3).
  std::function<at::Tensor(const at::Tensor& output, const TrainBatch& batch)> label_loss;
  // A sub-network's dev score, higher is better (the model's mode is left as it was).
  std::function<double(const SubNet&)> dev_score;
};

struct TeacherOutput {
  std::vector<at::Tensor> hidden;
  at::Tensor output;
};

// One DynaBERT stage: every sub-network on every batch, distilled from the fixed teacher
// (stages 1 and 2) or trained on the labels (stage 3); best/ by the summed dev metric.
class DynaStageMethod : public TrainingMethod {
 public:
  DynaStageMethod(const DynaTrainOptions& options, StageModel student, StageModel teacher,
                  std::vector<SubNet> subnets, StageObjective objective)
      : o_(options),
        student_(std::move(student)),
        teacher_(std::move(teacher)),
        subnets_(std::move(subnets)),
        objective_(std::move(objective)),
        config_(student_.encoder->config()) {}

  double backward(const TrainBatch& batch, double micro_batches) override {
    // The teacher runs once per batch (per width for the paper's same-width variant).
    std::map<double, TeacherOutput> teacher_out;
    auto teacher_at = [&](double width) -> const TeacherOutput& {
      const double key = o_.same_width_teacher ? width : 1.0;
      auto it = teacher_out.find(key);
      if (it == teacher_out.end()) {
        at::NoGradGuard no_grad;
        Encoded enc = teacher_.encoder->forward(batch.inputs, SubNet{key, 1.0});
        at::Tensor out = teacher_.output(enc, batch.inputs);
        it = teacher_out.emplace(key, TeacherOutput{enc.hidden_states, out}).first;
      }
      return it->second;
    };
    double total = 0;
    for (const SubNet& s : subnets_) {
      const Encoded enc = student_.encoder->forward(batch.inputs, s);
      const at::Tensor out = student_.output(enc, batch.inputs);
      at::Tensor loss;
      if (o_.stage == DynaStage::kFinetune) {
        loss = objective_.label_loss(out, batch);
      } else {
        const TeacherOutput& tout = teacher_at(s.width);
        const at::Tensor pred = objective_.distil(out, tout.output);
        // Hidden states (embedding output first) against the mapped teacher states; the mean
        // includes padding positions, as the reference.
        const std::vector<int64_t> targets =
            distillation_targets(config_.num_hidden_layers, s.depth);
        at::Tensor hidden = at::zeros({}, out.options());
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
      const double main = objective_.dev_score(s);
      out[subnet_name(s)] = main;
      sum += main;
    }
    out["main"] = sum;  // the reference selects by the summed metric
    student_.whole->train();
    return out;
  }

 private:
  const DynaTrainOptions& o_;
  StageModel student_;
  StageModel teacher_;  // no encoder in stage 3
  std::vector<SubNet> subnets_;
  StageObjective objective_;
  const BertConfig& config_;
  std::map<std::string, std::pair<double, int64_t>> subnet_losses_;  // since the last report
};

// Every text of `data` on its own (both of a pair): what an embedding model is distilled on.
EncodedTask texts_of(const Tokenizer& tokenizer, const TaskData& data, int64_t limit) {
  EncodedTask out;
  for (const Example& e : data.examples) {
    out.inputs.push_back(
        infer::encode_within(tokenizer, e.text_a, std::nullopt, limit, true).encoding);
    if (e.text_b)
      out.inputs.push_back(
          infer::encode_within(tokenizer, *e.text_b, std::nullopt, limit, true).encoding);
  }
  return out;
}

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
  const bool distil = o.stage != DynaStage::kFinetune;
  if (distil && o.teacher_dir.empty())
    fail("dynabert ", to_string(o.stage), ": a teacher is required");
  std::vector<SubNet> subnets;
  const std::vector<double> depths =
      o.stage == DynaStage::kWidth ? std::vector<double>{1.0} : o.depths;
  for (double d : depths)
    for (double w : o.widths) subnets.push_back({w, d});
  auto announce = [&](const char* distilled) {
    if (!is_main_rank()) return;
    std::cerr << "dynabert " << to_string(o.stage) << ": " << subnets.size()
              << " sub-networks per batch";
    if (distil)
      std::cerr << ", teacher " << o.teacher_dir
                << (o.same_width_teacher ? " at each width" : " at full width") << " (" << distilled
                << "), lambda1 " << o.lambda1 << ", lambda2 " << o.lambda2;
    std::cerr << "\n";
  };
  // The teacher must produce what the student is compared with.
  auto check_teacher = [&](const BertConfig& student, const BertConfig& teacher, const char* what) {
    if (teacher.num_labels() != student.num_labels() || teacher.hidden_size != student.hidden_size)
      fail(o.teacher_dir, ": the teacher (", what, ", ", teacher.num_labels(), " labels, hidden ",
           teacher.hidden_size, ") does not match the student (", student.num_labels(),
           " labels, hidden ", student.hidden_size, ")");
  };
  RunSignature run{"dynabert " + to_string(o.stage)};
  o.sign(run);

  if (!has_classifier_weights(t.model_dir)) {
    // An embedding model: its sentence vectors are distilled on every text of the task's files.
    if (!distil)
      fail(t.model_dir,
           ": an embedding model (no classifier) is distilled in the width and width-depth "
           "stages; stage 3 trains a classifier on the labels");
    if (has_classifier_weights(o.teacher_dir))
      fail(o.teacher_dir, ": the teacher is a classifier but the student ", t.model_dir,
           " is an embedding model");
    BertModel student = load_encoder(t.model_dir);
    BertConfig config = student->config();
    check_tokenizer_fits(tokenizer, config, t.model_dir);
    add_history(config, "dynabert " + to_string(o.stage));
    BertModel teacher = load_encoder(o.teacher_dir);
    teacher->eval();
    check_teacher(config, teacher->config(), "an embedding model");
    const SentenceHead head = sentence_head_of(t.model_dir);
    const TaskSpec spec = TaskSpec::make(t.task, t.data_dir, t.skip_bad_rows);
    const int64_t limit = infer::max_input_length(config, tokenizer, t.max_length);
    const EncodedTask train = texts_of(tokenizer, load_train_split(spec, t), limit);
    const EncodedPairs dev = encode_pairs(tokenizer, spec, spec.load("dev"), limit, true);
    auto vectors = [head](const Encoded& enc, const Batch& batch) {
      return sentence_vectors(enc, batch, head);
    };
    StageObjective objective;
    objective.distil = [](const at::Tensor& s, const at::Tensor& tv) {
      return at::mse_loss(s, tv);
    };
    objective.dev_score = [&](const SubNet& s) {
      return pair_spearman(student, dev, s, head, tokenizer.pad_id());
    };
    announce("sentence vectors");
    AdamW optimizer(bert_param_groups(named_parameters(*student), t.lr, t.weight_decay),
                    AdamOptions{});
    DynaStageMethod method(o, {student.get(), student, vectors}, {teacher.get(), teacher, vectors},
                           subnets, objective);
    SaveOptions save;
    save.extra_files = [&](const std::string& dir) {
      infer::copy_sentence_transformer_files(t.model_dir, dir);
    };
    return train_task(run, t, Trainee{*student, optimizer, config, tokenizer, save}, train, method);
  }

  BertForSequenceClassification student = load_classifier(t.model_dir);
  BertConfig config = student->bert->config();
  check_tokenizer_fits(tokenizer, config, t.model_dir);
  add_history(config, "dynabert " + to_string(o.stage));
  const TaskSpec spec = task_for_model(config, t.task, t.data_dir, t.skip_bad_rows);
  const TaskData train_data = load_train_split(spec, t);
  const EncodedTask train = encode_task(tokenizer, spec, train_data, t.max_length, true);
  BertForSequenceClassification teacher{nullptr};
  StageModel teacher_model;
  if (distil) {
    teacher = load_classifier(o.teacher_dir);
    teacher->eval();
    check_teacher(config, teacher->bert->config(), "a classifier");
    teacher_model = {teacher.get(), teacher->bert,
                     [teacher](const Encoded& enc, const Batch&) { return teacher->logits(enc); }};
  }
  StageObjective objective;
  // Soft cross-entropy at temperature 1, or MSE on the outputs for regression (the reference
  // silently uses 0 there).
  objective.distil = [&](const at::Tensor& s, const at::Tensor& tl) {
    return distillation_loss(s, tl, 1.0, spec.regression);
  };
  objective.label_loss = [&](const at::Tensor& logits, const TrainBatch& batch) {
    return task_loss(logits, train, batch.rows, 0, batch.rows.size(), spec.regression);
  };
  objective.dev_score = [&](const SubNet& s) {
    return evaluate_task(student, tokenizer, spec, "dev", t.max_length, 64, s).metrics.at("main");
  };
  announce("logits");
  AdamW optimizer(bert_param_groups(named_parameters(*student), t.lr, t.weight_decay),
                  AdamOptions{});
  StageModel student_model{
      student.get(), student->bert,
      [student](const Encoded& enc, const Batch&) { return student->logits(enc); }};
  DynaStageMethod method(o, student_model, teacher_model, subnets, objective);
  return train_task(run, t, Trainee{*student, optimizer, config, tokenizer}, train, method);
}

}  // namespace slimbert
