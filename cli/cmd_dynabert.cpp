// slimbert dynabert: rewiring a fine-tuned model by importance, and exporting sub-networks.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/dist.h"
#include "slimbert/core/fs.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {
namespace {

nlohmann::json rows_of(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    const at::Tensor row = t[r].to(at::kCPU, at::kDouble).contiguous();
    out.push_back(
        std::vector<double>(row.data_ptr<double>(), row.data_ptr<double>() + row.numel()));
  }
  return out;
}

void add_rewire(CLI::App* dyna) {
  struct Opts {
    std::string model, task, data, out, split = "train";
    int64_t examples = 2000, batch_size = 32, max_length = 128;
    uint64_t seed = 0;
    bool per_batch = false, skip_bad_rows = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "rewire", "sort heads and FFN neurons of a fine-tuned model by importance (most first)");
  cmd->add_option("--model", o->model, "fine-tuned task model")->required();
  cmd->add_option("--task", o->task, "GLUE task name or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->data, "task directory")->required();
  cmd->add_option("--out", o->out, "rewired model directory (+ importance.json)")->required();
  cmd->add_option("--split", o->split,
                  "examples to score on: train (a seeded subset) or dev (the reference's choice)")
      ->check(CLI::IsMember({"train", "dev"}))
      ->capture_default_str();
  cmd->add_option("--examples", o->examples, "examples scored (0 = the whole split)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "examples per batch")->capture_default_str();
  cmd->add_option("--max-length", o->max_length, "tokens per example")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", o->seed, "subset seed")->capture_default_str();
  cmd->add_flag("--per-batch-gradients", o->per_batch,
                "score each batch's own gradient (the reference accumulates them)");
  cmd->add_flag("--skip-bad-rows", o->skip_bad_rows, "skip malformed rows instead of failing");
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    configure_runtime(o->runtime);
    BertForSequenceClassification model = load_classifier(o->model);
    const BertConfig& config = model->bert->config();
    const Tokenizer tokenizer = Tokenizer::from_dir(o->model);
    const TaskSpec spec = task_for_model(config, o->task, o->data, o->skip_bad_rows);
    TaskData data = spec.load(o->split);
    if (o->examples > 0 && static_cast<int64_t>(data.examples.size()) > o->examples) {
      std::mt19937_64 rng(o->seed);
      std::shuffle(data.examples.begin(), data.examples.end(), rng);
      data.examples.resize(static_cast<size_t>(o->examples));
    }
    const EncodedTask enc = encode_task(tokenizer, spec, data, o->max_length, true);
    std::cerr << "dynabert rewire: scoring " << enc.inputs.size() << " examples of " << data.source
              << "\n";
    ImportanceOptions options;
    options.cumulative_gradients = !o->per_batch;
    const Importance imp =
        compute_importance(model, enc, spec.regression, o->batch_size, tokenizer.pad_id(), options);
    rewire(model->bert, imp);
    save_checkpoint(o->out, config, *model, tokenizer);
    nlohmann::json report = {{"source", data.source},
                             {"examples", enc.inputs.size()},
                             {"cumulative_gradients", options.cumulative_gradients},
                             {"head_importance", rows_of(imp.heads)},
                             {"neuron_importance", rows_of(imp.neurons)}};
    for (const auto& order : head_order(imp)) {
      const at::Tensor o64 = order.cpu().contiguous();
      report["head_order"].push_back(
          std::vector<int64_t>(o64.data_ptr<int64_t>(), o64.data_ptr<int64_t>() + o64.numel()));
    }
    write_file_atomic(o->out + "/importance.json", report.dump() + "\n");
    const auto orders = head_order(imp);
    for (size_t l = 0; l < orders.size(); ++l) {
      std::cout << "layer " << l << ": heads by importance";
      for (int64_t i = 0; i < orders[l].numel(); ++i)
        std::cout << " " << orders[l][i].item<int64_t>();
      std::cout << "\n";
    }
    std::cout << "rewired model: " << o->out << " (importance in " << o->out
              << "/importance.json)\n";
  });
}

void add_export(CLI::App* dyna) {
  struct Opts {
    std::string model, out, heads = "pruned";
    double width = 1.0, depth = 1.0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "export", "write the (width, depth) sub-network as a standalone HF checkpoint");
  cmd->add_option("--heads", o->heads,
                  "dropped heads: pruned (smallest; config pruned_heads, which transformers 5 "
                  "no longer applies) or zeroed (full-size zero heads, loads in any transformers)")
      ->check(CLI::IsMember({"pruned", "zeroed"}))
      ->capture_default_str();
  cmd->add_option("--model", o->model, "rewired / DynaBERT model")->required();
  cmd->add_option("--width", o->width, "width multiplier (fraction of heads and FFN neurons)")
      ->capture_default_str();
  cmd->add_option("--depth", o->depth, "depth multiplier (fraction of layers)")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->callback([o] {
    const BertConfig c =
        export_subnet(o->model, SubNet{o->width, o->depth}, o->out,
                      o->heads == "zeroed" ? DroppedHeads::kZeroed : DroppedHeads::kPruned);
    std::cout << "exported width " << o->width << ", depth " << o->depth << " to " << o->out << ": "
              << c.num_hidden_layers << " layers, " << c.heads_in_layer(0) << " heads"
              << (o->heads == "zeroed" ? " (the dropped ones zeroed)" : "") << ", FFN "
              << c.intermediate_size << "\n";
  });
}

std::vector<double> parse_list(const std::string& text, const char* flag) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail(flag, ": '", item, "' is not a number (expected a list like 1,0.75,0.5)");
    }
    if (!(out.back() > 0 && out.back() <= 1)) fail(flag, ": ", out.back(), " is not in (0, 1]");
  }
  if (out.empty()) fail(flag, ": empty list");
  return out;
}

void add_stage(CLI::App* dyna, DynaStage stage, const std::string& help) {
  struct Opts {
    DynaTrainOptions d;
    std::string widths = "1,0.75,0.5,0.25", depths = "1,0.75,0.5", teacher_mode = "full";
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  o->d.stage = stage;
  // The reference recipe (ALGORITHMS.md §B.9): AdamW 2e-5, no warm-up, no decay, 3 epochs.
  o->d.train.lr = 2e-5;
  o->d.train.warmup_fraction = 0;
  o->d.train.weight_decay = 0;
  o->d.lambda2 = stage == DynaStage::kWidth ? 0.1 : 1.0;
  auto* cmd = dyna->add_subcommand(to_string(stage), help);
  cmd->add_option("--model", o->d.train.model_dir,
                  stage == DynaStage::kWidth        ? "rewired model (dynabert rewire)"
                  : stage == DynaStage::kWidthDepth ? "DynaBERT_W model (train-width's best/)"
                                                    : "DynaBERT model (train's best/)")
      ->required();
  if (stage != DynaStage::kFinetune) {
    cmd->add_option("--teacher", o->d.teacher_dir,
                    stage == DynaStage::kWidth ? "the fine-tuned task model"
                                               : "DynaBERT_W (usually the same as --model)")
        ->required();
    cmd->add_option("--lambda1", o->d.lambda1, "weight of the logit loss")->capture_default_str();
    cmd->add_option("--lambda2", o->d.lambda2, "weight of the hidden-state and embedding loss")
        ->capture_default_str();
  }
  if (stage == DynaStage::kWidthDepth)
    cmd->add_option("--teacher-width", o->teacher_mode,
                    "full: the teacher at full width (reference code); same: at the student's "
                    "width (paper)")
        ->check(CLI::IsMember({"full", "same"}))
        ->capture_default_str();
  cmd->add_option("--widths", o->widths, "width multipliers")->capture_default_str();
  if (stage != DynaStage::kWidth)
    cmd->add_option("--depths", o->depths, "depth multipliers")->capture_default_str();
  add_task_loop_options(cmd, &o->d.train);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o, cmd] {
    configure_training(o->runtime);
    o->d.widths = parse_list(o->widths, "--widths");
    o->d.depths = parse_list(o->depths, "--depths");
    o->d.same_width_teacher = o->teacher_mode == "same";
    std::cerr << "dynabert " << to_string(o->d.stage) << " config:\n"
              << cmd->config_to_str(true, false) << "threads: " << describe_threads() << "\n";
    const FinetuneResult r = dynabert_train(o->d);
    if (!is_main_rank()) return;  // rank 0 reports
    if (!r.finished) {
      std::cout << "stopped at step " << r.step << "; --resume continues\n";
      return;
    }
    std::cout << "best summed dev metric " << r.best_dev.metrics.at("main") << " at step "
              << r.best_step << ":";
    for (const auto& [k, v] : r.best_dev.metrics)
      if (k != "main") std::cout << " " << k << " " << v;
    std::cout << "\n" << o->d.train.out_dir << "/best\n";
  });
}

void add_grid(CLI::App* dyna) {
  struct Opts {
    std::vector<std::string> models, separate;
    std::string out, widths = "1,0.75,0.5,0.25", depths = "1,0.75,0.5", splits = "dev,test";
    GridOptions g;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "grid", "score and time every (width, depth); JSON, Markdown and an HTML Pareto report");
  cmd->add_option("--model", o->models,
                  "task model, optionally named NAME=DIR (repeat to compare models on one plot)")
      ->required();
  cmd->add_option("--separate", o->separate,
                  "baseline series NAME=DIR of static models trained separately, one per point "
                  "in DIR/w<W>_d<D>[/best] (repeatable)");
  cmd->add_option("--task", o->g.task, "GLUE task name or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->g.data_dir, "task directory")->required();
  cmd->add_option("--out", o->out, "report directory (grid.json, grid.md, grid.html, *.svg)")
      ->required();
  cmd->add_option("--widths", o->widths, "width multipliers")->capture_default_str();
  cmd->add_option("--depths", o->depths, "depth multipliers")->capture_default_str();
  cmd->add_option("--splits", o->splits, "splits to score (unlabelled ones are skipped)")
      ->capture_default_str();
  cmd->add_option("--max-length", o->g.max_length, "tokens per example")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--latency-iters", o->g.latency_iters, "timed forward passes per point")
      ->capture_default_str();
  cmd->add_option("--latency-seq", o->g.latency_seq, "tokens per sequence in the timed passes")
      ->capture_default_str();
  cmd->add_flag("--skip-bad-rows", o->g.skip_bad_rows, "skip malformed rows instead of failing");
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    configure_runtime(o->runtime);
    o->g.widths = parse_list(o->widths, "--widths");
    o->g.depths = parse_list(o->depths, "--depths");
    o->g.splits.clear();
    std::stringstream in(o->splits);
    for (std::string s; std::getline(in, s, ',');) o->g.splits.push_back(s);
    std::vector<GridSeries> series;
    const auto split_spec = [](const std::string& spec) {
      const size_t eq = spec.find('=');
      if (eq == std::string::npos) return std::make_pair(spec, spec);
      return std::make_pair(spec.substr(0, eq), spec.substr(eq + 1));
    };
    for (const auto& spec : o->separate)  // fail before the long evaluations, not after
      find_separate_models(split_spec(spec).second, o->g);
    for (const auto& spec : o->models) {
      const auto [name, dir] = split_spec(spec);
      series.push_back({name, evaluate_grid(dir, o->g)});
    }
    for (const auto& spec : o->separate) {
      const auto [name, dir] = split_spec(spec);
      series.push_back({name, evaluate_separate(dir, o->g)});
    }
    const std::string html =
        write_grid_report(series, TaskSpec::make(o->g.task, o->g.data_dir).display_name(), o->out);
    std::cout << read_file(o->out + "/grid.md") << "report: " << html << "\n";
  });
}

void add_augment(CLI::App* dyna) {
  struct Opts {
    AugmentOptions a;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "augment",
      "TinyBERT-style augmentation: rewrite training texts with masked-LM word candidates");
  cmd->add_option("--mlm", o->a.mlm_dir, "pretrained masked LM (e.g. the pretrained teacher)")
      ->required();
  cmd->add_option("--task", o->a.task, "GLUE task name or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->a.data_dir, "task directory")->required();
  cmd->add_option("--out", o->a.out_dir, "output task directory (train/dev/test .jsonl)")
      ->required();
  cmd->add_option("--candidates", o->a.candidates, "M: MLM candidates per word")
      ->capture_default_str();
  cmd->add_option("--per-example", o->a.per_example,
                  "N: rewrites attempted per example (duplicates dropped; TinyBERT: 10-30)")
      ->capture_default_str();
  cmd->add_option("--replace-prob", o->a.replace_prob, "p: chance a candidate word is replaced")
      ->capture_default_str();
  cmd->add_option("--max-length", o->a.max_length, "MLM input tokens (masked + original window)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--batch-size", o->a.batch_size, "masked inputs per forward")
      ->capture_default_str();
  cmd->add_option("--max-examples", o->a.max_examples,
                  "augment the subset --max-train-examples N --seed S would train on (0 = all)")
      ->capture_default_str();
  cmd->add_option("--subset-seed", o->a.subset_seed, "the --seed of that subset")
      ->capture_default_str();
  cmd->add_option("--seed", o->a.seed, "rewrite sampling seed")->capture_default_str();
  cmd->add_flag("--skip-bad-rows", o->a.skip_bad_rows, "skip malformed rows instead of failing");
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    configure_runtime(o->runtime);
    const AugmentResult r = augment_task(o->a);
    std::cout << r.originals << " examples, " << r.rewrites << " rewrites; " << r.candidate_words
              << " of " << r.words << " words had MLM candidates\n"
              << o->a.out_dir << " (use --task jsonl)\n";
  });
}

}  // namespace

void add_dynabert(CLI::App& app) {
  auto* dyna = app.add_subcommand("dynabert", "DynaBERT: one model for any width and depth");
  dyna->require_subcommand(1);
  add_rewire(dyna);
  add_stage(dyna, DynaStage::kWidth,
            "stage 1 (DynaBERT_W): distil every width from the fine-tuned teacher");
  add_stage(dyna, DynaStage::kWidthDepth,
            "stage 2 (DynaBERT): distil every (width, depth) from DynaBERT_W");
  add_stage(dyna, DynaStage::kFinetune,
            "stage 3 (optional): fine-tune every (width, depth) on the labels");
  add_export(dyna);
  add_grid(dyna);
  add_augment(dyna);
}

}  // namespace slimbert::cli
