// slimbert compress: a fine-tuned BERT in, deployable smaller models and a report out.
#include <iomanip>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/dist.h"
#include "slimbert/pipeline/compress.h"

namespace slimbert::cli {

namespace {

// An override's flag, as its declaration (CompressOptions::Overrides::each) gives it.
void add_override(CLI::App* cmd, const OverrideSpec& spec, std::optional<double>& value) {
  optional_option(cmd, spec.flag, value, spec.help, CLI::Range(spec.lo, spec.hi));
}
void add_override(CLI::App* cmd, const OverrideSpec& spec, std::optional<int64_t>& value) {
  optional_option(cmd, spec.flag, value, spec.help,
                  CLI::Range(static_cast<int64_t>(spec.lo), static_cast<int64_t>(spec.hi)));
}
void add_override(CLI::App* cmd, const OverrideSpec& spec, std::optional<std::string>& value) {
  optional_option(cmd, spec.flag, value, spec.help, CLI::IsMember(spec.choices));
}
// A boolean is chosen by name: the second choice is true.
void add_override(CLI::App* cmd, const OverrideSpec& spec, std::optional<bool>& value) {
  const std::string yes = spec.choices.at(1);
  cmd->add_option_function<std::string>(
         spec.flag, [&value, yes](const std::string& v) { value = v == yes; }, spec.help)
      ->check(CLI::IsMember(spec.choices));
}

}  // namespace

void add_compress(CLI::App& app) {
  struct Opts {
    CompressOptions c;
    std::string method = "dynabert", widths = "1,0.75,0.5,0.25", depths = "1,0.75,0.5",
                lrs = "1e-4";
    bool no_stage3 = false, verbose = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "compress",
      "from a fine-tuned BERT to smaller, faster models: train, score, profile, export, report");
  cmd->add_option("--model", o->c.model_dir,
                  "the fine-tuned task model (the teacher): a classifier, or an embedding model "
                  "(no classifier; --data then holds labelled text pairs, its sentence vectors "
                  "are distilled and sub-networks scored by Spearman's rho)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--task", o->c.task, "GLUE task name or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->c.data_dir, "task directory (train, dev and optionally test)")
      ->required();
  cmd->add_option("--out", o->c.out_dir,
                  "output: report.html, model/ (every sub-network), exports/ (chosen models), "
                  "one directory per stage")
      ->required();
  cmd->add_option("--method", o->method,
                  "dynabert (width x depth adaptive), wid (a narrower student by weight-inherited "
                  "distillation, then fine-tuned) or wid+dynabert (both)")
      ->check(CLI::IsMember({"dynabert", "wid", "wid+dynabert"}))
      ->capture_default_str();
  cmd->add_option("--corpus", o->c.corpus, "wid: MLM shards (`slimbert data shards`)");
  cmd->add_option("--mlm-teacher", o->c.mlm_teacher,
                  "wid: the pretrained masked LM the task model was fine-tuned from");
  cmd->add_option("--wid-steps", o->c.wid_steps, "wid: training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--target-hidden", o->c.target_hidden,
                  "wid: the student's hidden size (0 = about half the teacher's)")
      ->capture_default_str();
  cmd->add_option("--widths", o->widths, "dynabert: width multipliers")->capture_default_str();
  cmd->add_option("--depths", o->depths, "dynabert: depth multipliers")->capture_default_str();
  cmd->add_flag("--no-stage3", o->no_stage3,
                "dynabert: skip stage 3 (every sub-network fine-tuned on the labels; embedding "
                "models always skip it)");
  cmd->add_option("--lr", o->lrs,
                  "learning rate of every training stage; a list (1e-4,5e-4) tries each per "
                  "stage and keeps the best on dev")
      ->capture_default_str();
  cmd->add_option("--epochs", o->c.epochs, "epochs per DynaBERT stage")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}))
      ->capture_default_str();
  cmd->add_option("--student-epochs", o->c.student_epochs,
                  "wid: epochs of the student's fine-tuning")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}))
      ->capture_default_str();
  cmd->add_option("--batch-size", o->c.batch_size, "examples per step")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-length", o->c.max_length, "tokens per example")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-train-examples", o->c.max_train_examples,
                  "train on a seeded subset of this many examples (0 = all)")
      ->capture_default_str();
  cmd->add_option("--rewire-examples", o->c.rewire_examples,
                  "dynabert: examples scored for head and neuron importance (0 = all)")
      ->capture_default_str();
  cmd->add_option("--budget-ms", o->c.budget_ms,
                  "choose the most accurate sub-network whose p99 latency fits this budget at "
                  "batch 1 (default: the fastest within 99% of the teacher's dev score)")
      ->check(CLI::Range(0.0, 3.6e6));
  cmd->add_flag("--int8", o->c.int8, "also score, time and profile the int8 runtime");
  cmd->add_option("--latency-iters", o->c.latency_iters, "timed passes per sub-network")
      ->check(CLI::Range(int64_t{2}, int64_t{10000}))
      ->capture_default_str();
  cmd->add_option("--seed", o->c.seed, "seed of data order, subsets and initialisation")
      ->capture_default_str();
  cmd->add_option("--log-every", o->c.log_every, "steps per progress line")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  cmd->add_flag("--resume", o->c.resume,
                "continue a run in --out: finished stages are skipped, the running one resumes");
  cmd->add_flag("--keep-stages", o->c.keep_stages,
                "keep every stage's model (by default only model/, exports/, the report and "
                "the stages' logs stay)");
  cmd->add_flag("--skip-bad-rows", o->c.skip_bad_rows, "skip malformed rows instead of failing");
  // Past the recipes: each unset one keeps its stage's own default.
  CompressOptions::Overrides::each(
      o->c.set, [cmd](const OverrideSpec& spec, auto& value) { add_override(cmd, spec, value); });
  add_verbose_flag(cmd, &o->verbose);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o, cmd] {
    o->c.method = parse_compress_method(o->method);
    o->c.widths = parse_list(o->widths, "--widths");
    o->c.depths = parse_list(o->depths, "--depths");
    o->c.lrs = parse_list(o->lrs, "--lr");
    o->c.stage3 = !o->no_stage3;
    o->c.command = command_line();
    o->c.runtime = o->runtime;
    configure_runtime(o->runtime);
    record_run_config(cmd, o->verbose);
    const CompressResult r = compress(o->c);
    const CompressedModel& m = r.chosen();
    std::cout << std::fixed << std::setprecision(4) << "\ncompressed: " << m.dir << "\n  "
              << subnet_name(m.subnet) << ", " << std::setprecision(1) << m.size_mb << " MB, dev "
              << r.metric << " " << std::setprecision(4) << m.dev << " (teacher " << r.teacher_dev
              << "), p50 " << std::setprecision(2) << m.latency_ms << " ms at batch 1 x "
              << o->c.max_length << " tokens\n"
              << "other exports:";
    for (const auto& e : r.exports)
      if (!e.chosen) std::cout << " " << e.dir;
    std::cout << "\nreport: " << r.report << "\n\nnext:\n  slimbert serve " << m.dir
              << " --port 8080\n  slimbert serve " << r.model_dir
              << " --port 8080   # every sub-network, per request or by latency budget\n";
  });
}

}  // namespace slimbert::cli
