// `slimbert wid`: continued MLM training of the compactor model with the pruning schedule and
// gradient surgery, on the shared MLM loop; then the merge into an HF student.
#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/model/names.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/wid/wid.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

// Nats of validation loss the merge may add before the user is told (at a finished pull it adds
// a few thousandths: removed entries sit within ~lambda x lr of zero).
constexpr double kMergeGapWarning = 0.02;

// Encoder parameters the merge would produce with the current masks.
int64_t merged_parameters(const WidModelImpl& model, const WidMasks& masks) {
  const BertConfig& c = model.config();
  if (!masks.active()) return encoder_parameters(c);
  const int64_t H = masks.residual.sum().item<int64_t>();
  int64_t n = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + 2 * H;
  for (size_t l = 0; l < masks.attention.size(); ++l) {
    const int64_t A = masks.attention[l].sum().item<int64_t>();
    const int64_t I = masks.ffn[l].sum().item<int64_t>();
    n += 3 * (H * A + A) + (A * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H;
  }
  return n;
}

nlohmann::json schedule_json(const WidSchedule& s, const WidMasks& masks) {
  return {{"strategy", to_string(s.strategy)},
          {"residual_score", to_string(s.residual_score)},
          {"mask_scores", to_string(s.scores)},
          {"target_hidden", s.target_hidden},
          {"w_step", s.w_step},
          {"zero_by", s.zero_by},
          {"masks", masks.to_json()}};
}

WidSchedule schedule_from_json(const nlohmann::json& j, const std::string& source) {
  const JsonFields f(j, source + ": WID state");
  WidSchedule s;
  s.strategy = parse_wid_strategy(f.string("strategy"));
  s.residual_score = parse_residual_score(f.string("residual_score"));
  // Checkpoints written before the option existed scored from the compactors.
  s.scores = parse_mask_scores(f.has("mask_scores") ? f.string("mask_scores") : "compactors");
  s.target_hidden = f.integer("target_hidden", 1, INT64_MAX);
  s.w_step = f.integer("w_step", 1, INT64_MAX);
  s.zero_by = f.has("zero_by") ? f.number("zero_by") : 0.0;  // absent before the option
  return s;
}

void write_student(const std::string& dir, const BertConfig& config, const BertForMaskedLM& student,
                   const Tokenizer& tokenizer, bool float16) {
  SaveOptions save;
  if (float16) save.float_dtype = DType::F16;
  save_checkpoint(dir, config, *student, tokenizer, save);
}

// WID on the MLM loop: the compactor model's forward under the current masks, the mask
// schedule and gradient surgery before each update, the pull of removed entries after it, and
// the masks in each checkpoint.
class WidTraining : public MlmMethod {
 public:
  WidTraining(WidModel& model, const BertConfig& config, const WidOptions& options,
              const Tokenizer& tokenizer, AdamW& optimizer,
              std::map<std::string, std::pair<size_t, size_t>> slot, int64_t target_step)
      : MlmMethod(*model, config, options.train, tokenizer),
        wid_(model),
        o_(options),
        optimizer_(optimizer),
        slot_(std::move(slot)),
        target_step_(target_step) {}

  const WidMasks& masks() const { return masks_; }

  MlmOutput forward(const MlmBatch& batch) override {
    Batch in{batch.input_ids, at::Tensor(), batch.attention_mask};
    return mlm_loss(wid_->forward(in, masks_), batch,
                    [&](const at::Tensor& rows) { return wid_->logits(rows, masks_); });
  }

  double forward_flops(const TrainBatch& batch) const override {
    return MlmMethod::forward_flops(batch) + wid_->compactor_flops(batch.mlm.input_ids.size(0),
                                                                   batch.mlm.input_ids.size(1),
                                                                   batch.mlm.labels.size(0));
  }

  void before_update(int64_t step) override {
    const WidSchedule& s = o_.schedule;
    if (step % s.w_step == 0) masks_ = compute_masks(*wid_, s, step);
    apply_gradient_surgery(*wid_, masks_, step > s.w_step, o_.surgery,
                           [&](const std::string& name) -> at::Tensor& {
                             const auto& [g, i] = slot_.at(name);
                             return optimizer_.exp_avg(g, i);
                           });
  }

  void after_update(int64_t step) override {
    shrink_removed(*wid_, masks_, o_.schedule, step, target_step_, o_.train.steps);
  }

  nlohmann::json save_state() const override {
    return nlohmann::json{{"wid", schedule_json(o_.schedule, masks_)}};
  }

  void restore_state(const nlohmann::json& state) override {
    const WidSchedule& s = o_.schedule;
    const std::string source = o_.train.out_dir + " checkpoint";
    if (!state.contains("wid")) fail(source, ": not a WID checkpoint (no 'wid' state)");
    const WidSchedule saved = schedule_from_json(state.at("wid"), source);
    if (saved.strategy != s.strategy || saved.target_hidden != s.target_hidden ||
        saved.w_step != s.w_step || saved.residual_score != s.residual_score ||
        saved.scores != s.scores || saved.zero_by != s.zero_by)
      fail(source, ": was trained with strategy ", to_string(saved.strategy), ", target ",
           saved.target_hidden, ", w_step ", saved.w_step, ", residual scoring ",
           to_string(saved.residual_score), ", mask scores from ", to_string(saved.scores),
           ", zero-by ", saved.zero_by, "; resume with the same options");
    masks_ = WidMasks::from_json(state.at("wid").at("masks"), config_, source).to(wid_->device());
  }

  std::map<std::string, double> report() override {
    std::map<std::string, double> out = MlmMethod::report();
    const KeptSizes k = kept_sizes(*wid_, masks_);
    out.merge(std::map<std::string, double>{
        {"hidden", static_cast<double>(k.hidden)},
        {"attn", static_cast<double>(k.attention)},
        {"ffn", static_cast<double>(k.ffn)},
        {"params_M", static_cast<double>(merged_parameters(*wid_, masks_)) / 1e6}});
    return out;
  }

  // The compactor model still uses its removed entries until the pull has finished; the merged
  // student is that model with them zeroed, so each validation also scores it (student_loss):
  // the gap says how much the merge would cost at this step.
  std::map<std::string, double> validate() override {
    std::map<std::string, double> out = MlmMethod::validate();
    if (!masks_.active()) return out;
    at::NoGradGuard no_grad;
    // Only the removed entries are saved: a full copy of every compactor would be several
    // hundred MB at BERT-base size.
    std::vector<at::Tensor> removed_values;
    for (const auto& c : wid_->compactors)
      removed_values.push_back(c.weight.masked_select(removed_entries(c, masks_)));
    zero_removed(*wid_, masks_);
    const MlmValidation student = evaluate();
    for (size_t i = 0; i < removed_values.size(); ++i) {
      const Compactor& c = wid_->compactors[i];
      c.weight.masked_scatter_(removed_entries(c, masks_), removed_values[i]);
    }
    out["student_loss"] = student.loss;
    out["student_mlm_acc"] = student.accuracy;
    return out;
  }

 private:
  WidModel& wid_;
  const WidOptions& o_;
  AdamW& optimizer_;
  std::map<std::string, std::pair<size_t, size_t>> slot_;  // parameter -> (group, index)
  int64_t target_step_;
  WidMasks masks_;
};

}  // namespace

namespace {

// WID trains the masked LM: a task model fine-tuned from it has no MLM head to start from.
BertForMaskedLM load_mlm_teacher(const std::string& dir) {
  try {
    return load_masked_lm(dir);
  } catch (const Error&) {
    const TensorMap w = load_weights(dir);
    if (!w.count(hf::kMlmBias) && w.count(hf::path({hf::kClassifier, "weight"})))
      fail("WID needs the pretrained masked LM (with its MLM head, cls.predictions.*), but ", dir,
           " is a fine-tuned classifier (classifier.weight): give the checkpoint it was "
           "fine-tuned from");
    throw;
  }
}

}  // namespace

WidOptions short_run_wid_options() {
  // BERT-AdamW moves every compactor entry by ~lr per step, so a high compactor lr swamps the
  // identity. Lambda stays the reference's 20: Adam normalises the pull, so removed entries
  // oscillate around zero with amplitude ~lambda x lr, and lambda 100 collapsed a short run. The
  // reference's 400k-step recipe (ALGORITHMS.md §A.8) is lr 1e-6, compactor lr 5e-5, lambda 20.
  WidOptions o;
  o.train.steps = 2000;
  o.train.lr = 1e-4;
  o.train.warmup_fraction = 0.01;
  o.train.clip = 0;
  o.compactor_lr = 1e-4;
  o.surgery.lambda = 20;
  o.schedule.w_step = 0;  // steps / 32: the target at about half-way
  return o;
}

WidResult wid_train(WidOptions o) {
  const PretrainOptions& t = o.train;
  // compute_masks ignores the residual rule under weight scores; say so before any work.
  if (o.schedule.scores == MaskScores::kWeights &&
      o.schedule.residual_score != ResidualScore::kReference)
    fail(
        "wid: --residual-score chooses between compactor scores; with --mask-scores weights "
        "the residual mask is already scored from every weight on the residual stream");
  const Tokenizer tokenizer = Tokenizer::from_dir(t.init_dir);
  const BertConfig config = load_config_dir(t.init_dir);
  check_tokenizer_fits(tokenizer, config, t.init_dir);
  WidSchedule& s = o.schedule;
  s.target_hidden = resolve_target(config, s.strategy, o.target);
  if (s.w_step <= 0) s.w_step = std::max<int64_t>(1, t.steps / 32);
  if (s.zero_by < 0 || s.zero_by > 1)
    fail("--zero-by ", s.zero_by, ": expected a fraction of the steps after the target, 0 to 1");
  const int64_t needed = mask_steps_to_target(config, s) * s.w_step;
  if (t.steps <= needed)
    fail("--steps ", t.steps, " ends before the masks reach the target (step ", needed,
         " with --w-step ", s.w_step, "); use more steps or a smaller --w-step");

  WidModel model(load_mlm_teacher(t.init_dir));
  model->to(t.dtype);
  // Groups (§A.8): teacher weights at the base rate with decay, their biases/LayerNorms without,
  // compactors at their own rate with decay.
  ParamGroup weights{"weights", {}, {}, t.lr, t.weight_decay};
  ParamGroup no_decay{"no_decay", {}, {}, t.lr, 0.0};
  ParamGroup comp{"compactors", {}, {}, o.compactor_lr, t.weight_decay};
  for (const auto& [name, p] : named_parameters(*model)) {
    ParamGroup& g = name.rfind("compactors.", 0) == 0 ? comp
                    : is_norm_or_bias(name)           ? no_decay
                                                      : weights;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  std::map<std::string, std::pair<size_t, size_t>> slot;
  std::vector<ParamGroup> groups = {weights, no_decay, comp};
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].names.size(); ++i) slot[groups[g].names[i]] = {g, i};
  AdamW optimizer(std::move(groups), AdamOptions{AdamVariant::kBert, 0.9, 0.999, 1e-6});
  o.surgery.beta1 = 0.9;

  if (is_main_rank())
    std::cerr << "wid: teacher " << t.init_dir << " (hidden " << config.hidden_size << ", "
              << encoder_parameters(config) << " encoder parameters) -> hidden " << s.target_hidden
              << " (" << encoder_parameters(student_config(config, s.target_hidden, s.strategy))
              << "), strategy " << to_string(s.strategy) << ", residual scoring "
              << to_string(s.residual_score) << ", mask scores from " << to_string(s.scores)
              << ", w_step " << s.w_step << " (target reached at step " << needed << ")\n";

  WidTraining method(model, config, o, tokenizer, optimizer, std::move(slot), needed);
  WidResult result;
  result.train = train_mlm("wid", t, Trainee{*model, optimizer, config, tokenizer}, method);
  const WidMasks& masks = method.masks();
  if (!result.train.finished || !is_main_rank()) return result;
  auto [student_config_, student] = merge_student(*model, masks, s.strategy);
  result.student = student_config_;
  result.student_dir = (fs::path(t.out_dir) / "student").string();
  write_student(result.student_dir, student_config_, student, tokenizer, t.float16_final);
  // The training run validates the compactor model, whose removed entries are pulled towards
  // zero but not at zero; the student is what users get, so it is scored on the same batches.
  const ShardSet val = ShardSet::open(t.shards_dir, "validation");
  result.student_validation = evaluate_mlm(
      *student, [&](const MlmBatch& b) { return mlm_step(student, b); }, val, t.batch_size,
      t.eval_batches, mlm_masking(tokenizer, config));
  const double gap = result.student_validation.loss - result.train.validation_loss;
  if (t.eval_every > 0 && gap > kMergeGapWarning)
    std::cerr << "wid: warning: the merge raises the validation loss by " << gap << " ("
              << result.train.validation_loss << " -> " << result.student_validation.loss
              << "): the pull towards zero has not finished (largest removed entry "
              << largest_removed_entry(*model, masks)
              << "). Use --zero-by (e.g. 0.5) to ramp removed entries to zero after the target "
                 "(step "
              << needed << "), or train longer after it\n";
  std::cerr << "wid: student " << result.student_dir << ": hidden " << student_config_.hidden_size
            << ", " << student_config_.num_attention_heads << " heads of "
            << student_config_.attention_head_size() << ", FFN "
            << student_config_.intermediate_size << ", " << encoder_parameters(student_config_)
            << " encoder parameters; merged student validation loss "
            << result.student_validation.loss << " (compactor model "
            << result.train.validation_loss << ")\n";
  return result;
}

BertConfig wid_merge(const std::string& checkpoint_dir, const std::string& out, bool float16) {
  const std::string state_path =
      (fs::path(checkpoint_dir) / "trainer_state" / "state.json").string();
  if (!fs::exists(state_path))
    fail(checkpoint_dir, ": not a training checkpoint (no ", state_path, ")");
  const nlohmann::json state = read_json_file(state_path);
  check_schema_version(state, state_path, kTrainerStateVersion);
  if (!state.contains("wid")) fail(state_path, ": not a WID checkpoint (no 'wid' state)");
  const WidSchedule s = schedule_from_json(state.at("wid"), state_path);
  const BertConfig config = load_config_dir(checkpoint_dir);
  const WidMasks masks = WidMasks::from_json(state.at("wid").at("masks"), config, state_path);
  const TensorMap weights = load_weights(checkpoint_dir);
  check_config_matches_weights(config, weights, weights_path(checkpoint_dir));
  WidModel model(BertForMaskedLM{config});
  load_state(*model, weights, weights_path(checkpoint_dir));
  auto [student_config_, student] = merge_student(*model, masks, s.strategy);
  write_student(out, student_config_, student, Tokenizer::from_dir(checkpoint_dir), float16);
  return student_config_;
}

BertConfig wid_truncate(const std::string& teacher_dir, WidStrategy strategy,
                        const WidTarget& target, const std::string& out) {
  const BertConfig config = load_config_dir(teacher_dir);
  WidSchedule s;
  s.strategy = strategy;
  s.target_hidden = resolve_target(config, strategy, target);
  WidModel model(load_mlm_teacher(teacher_dir));
  auto [student_config_, student] = merge_student(*model, magnitude_masks(*model, s), strategy);
  write_student(out, student_config_, student, Tokenizer::from_dir(teacher_dir), false);
  return student_config_;
}

}  // namespace slimbert
