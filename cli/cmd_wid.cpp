// slimbert wid: Weight-Inherited Distillation of a teacher into a narrower student, and
// slimbert wid merge: the student of a saved compactor checkpoint.
#include <cmath>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/dist.h"
#include "slimbert/wid/wid.h"

namespace slimbert::cli {
namespace {

// "11000000", "11M", "1.5e7", "900K" -> parameters.
int64_t parse_count(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("--target-params: '", text, "' is not a number (e.g. 11000000, 11M, 900K)");
  }
  const std::string suffix = text.substr(used);
  if (suffix == "M" || suffix == "m")
    value *= 1e6;
  else if (suffix == "K" || suffix == "k")
    value *= 1e3;
  else if (!suffix.empty())
    fail("--target-params: unknown suffix '", suffix, "' in '", text, "' (use K or M)");
  if (!(value > 0)) fail("--target-params must be positive, got '", text, "'");
  return static_cast<int64_t>(std::llround(value));
}

}  // namespace

void add_wid(CLI::App& app) {
  struct Opts {
    WidOptions w;
    std::string strategy = "dim", residual = "reference", scores = "compactors", target_params;
    RuntimeConfig runtime;
    bool verbose = false;
    std::string merge_checkpoint, merge_out;
    bool merge_fp16 = false;
  };
  auto o = std::make_shared<Opts>();
  o->w = short_run_wid_options();
  auto* cmd = app.add_subcommand(
      "wid", "Weight-Inherited Distillation: compress a teacher into a narrower HF student");
  cmd->add_option("--teacher", o->w.train.init_dir, "teacher checkpoint with its MLM head");
  cmd->add_option("--corpus", o->w.train.shards_dir, "MLM shards (`slimbert data shards`)");
  cmd->add_option("--out", o->w.train.out_dir,
                  "output: checkpoints/, student/ (the merged HF model), metrics.jsonl");
  cmd->add_option("--target-hidden", o->w.target.hidden, "student hidden size");
  cmd->add_option("--target-params", o->target_params,
                  "encoder parameter budget (e.g. 11M): the largest valid student within it");
  cmd->add_option("--preset", o->w.target.preset,
                  "wid55 or wid11: BERT-base's 516 or 192 of 768 hidden, scaled to the teacher")
      ->check(CLI::IsMember({"wid55", "wid11"}));
  cmd->add_option("--strategy", o->strategy,
                  "dim (fewer dims per head) or head (fewer heads) for attention")
      ->check(CLI::IsMember({"dim", "head"}))
      ->capture_default_str();
  cmd->add_option("--residual-score", o->residual,
                  "residual mask from the layer-0 value compactor (reference) or from every "
                  "residual compactor (all)")
      ->check(CLI::IsMember({"reference", "all"}))
      ->capture_default_str();
  cmd->add_option("--mask-scores", o->scores,
                  "score every mask from the compactor norms (compactors, the reference) or from "
                  "the compacted weights' norms (weights: the teacher's magnitudes as the "
                  "compactors train)")
      ->check(CLI::IsMember({"compactors", "weights"}))
      ->capture_default_str();
  cmd->add_option("--w-step", o->w.schedule.w_step,
                  "steps between mask updates (0 = steps / 32: the target at about half-way)")
      ->capture_default_str();
  cmd->add_option("--compactor-lr", o->w.compactor_lr, "compactor learning rate")
      ->capture_default_str();
  cmd->add_option("--lambda", o->w.surgery.lambda, "pull of removed rows/columns towards zero")
      ->capture_default_str();
  cmd->add_option("--zero-by", o->w.schedule.zero_by,
                  "0: removed entries only feel the pull (the reference). F in (0, 1]: after the "
                  "target they also fall linearly to exactly zero, reached F of the way from the "
                  "target to the last step, so that the merge changes nothing (short runs)")
      ->capture_default_str();
  cmd->add_option("--warm-l2", o->w.surgery.warm_l2,
                  "L2 on every compactor entry before pruning starts")
      ->capture_default_str();
  add_mlm_loop_options(cmd, &o->w.train);
  add_verbose_flag(cmd, &o->verbose);
  add_runtime_options(cmd, &o->runtime);

  auto* merge = cmd->add_subcommand("merge", "merge a WID compactor checkpoint into a student");
  merge->add_option("--checkpoint", o->merge_checkpoint, "OUT/checkpoints/step-N of `slimbert wid`")
      ->required();
  merge->add_option("--out", o->merge_out, "student output directory")->required();
  merge->add_flag("--fp16", o->merge_fp16, "store the student in float16");
  merge->callback([o] {
    const BertConfig s = wid_merge(o->merge_checkpoint, o->merge_out, o->merge_fp16);
    std::cout << "student " << o->merge_out << ": hidden " << s.hidden_size << ", "
              << s.num_attention_heads << " heads of " << s.attention_head_size() << ", FFN "
              << s.intermediate_size << ", " << format_count(encoder_parameters(s))
              << " encoder parameters\n";
  });

  auto* truncate = cmd->add_subcommand(
      "truncate",
      "baseline: cut the teacher to the target by weight magnitude, without compactor training");
  truncate->add_option("--out", o->merge_out, "student output directory")->required();
  truncate->footer(
      "The teacher and the target are options of wid, given before `truncate`:\n"
      "  slimbert wid --teacher DIR (--target-hidden H | --target-params N | --preset P)\n"
      "               [--strategy dim|head] truncate --out DIR");
  truncate->callback([o] {
    if (o->w.train.init_dir.empty()) fail("wid truncate: --teacher is required");
    if (!o->target_params.empty()) o->w.target.parameters = parse_count(o->target_params);
    const BertConfig s = wid_truncate(o->w.train.init_dir, parse_wid_strategy(o->strategy),
                                      o->w.target, o->merge_out);
    std::cout << "truncated student " << o->merge_out << ": hidden " << s.hidden_size << ", "
              << s.num_attention_heads << " heads of " << s.attention_head_size() << ", FFN "
              << s.intermediate_size << ", " << format_count(encoder_parameters(s))
              << " encoder parameters\n";
  });

  cmd->callback([o, cmd, merge, truncate] {
    if (merge->parsed() || truncate->parsed()) return;
    for (auto [value, flag] :
         {std::pair{&o->w.train.init_dir, "--teacher"},
          std::pair{&o->w.train.shards_dir, "--corpus"}, std::pair{&o->w.train.out_dir, "--out"}})
      if (value->empty()) fail("wid: ", flag, " is required");
    configure_training(o->runtime);
    o->w.schedule.strategy = parse_wid_strategy(o->strategy);
    o->w.schedule.residual_score = parse_residual_score(o->residual);
    o->w.schedule.scores = parse_mask_scores(o->scores);
    if (!o->target_params.empty()) o->w.target.parameters = parse_count(o->target_params);
    record_run_config(cmd, o->verbose);
    const WidResult r = wid_train(o->w);
    if (!is_main_rank()) return;  // rank 0 reports
    if (!r.train.finished) {
      std::cout << "stopped at step " << r.train.step << "; --resume continues\n";
      return;
    }
    std::cout << "student " << r.student_dir << ": hidden " << r.student.hidden_size << ", "
              << r.student.num_attention_heads << " heads of " << r.student.attention_head_size()
              << ", FFN " << r.student.intermediate_size << ", "
              << format_count(encoder_parameters(r.student)) << " encoder parameters; "
              << describe_validation(r.student_validation.loss, r.student_validation.accuracy)
              << "\n";
  });
}

}  // namespace slimbert::cli
