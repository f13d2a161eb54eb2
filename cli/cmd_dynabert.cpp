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

void add_rewire(CLI::App* dyna) {
  struct Opts {
    RewireOptions r;
    bool per_batch = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "rewire", "sort heads and FFN neurons of a fine-tuned model by importance (most first)");
  cmd->add_option("--model", o->r.model_dir, "fine-tuned task model")->required();
  cmd->add_option("--task", o->r.task, "GLUE task name or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->r.data_dir, "task directory")->required();
  cmd->add_option("--out", o->r.out_dir, "rewired model directory (+ importance.json)")->required();
  cmd->add_option("--split", o->r.split,
                  "examples to score on: train (a seeded subset) or dev (the reference's choice)")
      ->check(CLI::IsMember({"train", "dev"}))
      ->capture_default_str();
  cmd->add_option("--examples", o->r.examples, "examples scored (0 = the whole split)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->r.batch_size, "examples per batch")->capture_default_str();
  cmd->add_option("--max-length", o->r.max_length, "tokens per example")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", o->r.seed, "subset seed")->capture_default_str();
  cmd->add_flag("--per-batch-gradients", o->per_batch,
                "score each batch's own gradient (the reference accumulates them)");
  cmd->add_flag("--skip-bad-rows", o->r.skip_bad_rows, "skip malformed rows instead of failing");
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    configure_runtime(o->runtime);
    o->r.importance.cumulative_gradients = !o->per_batch;
    const RewireResult r = rewire_model(o->r);
    const auto orders = head_order(r.importance);
    for (size_t l = 0; l < orders.size(); ++l) {
      std::cout << "layer " << l << ": heads by importance";
      for (int64_t i = 0; i < orders[l].numel(); ++i)
        std::cout << " " << orders[l][i].item<int64_t>();
      std::cout << "\n";
    }
    std::cout << "rewired model: " << o->r.out_dir << " (importance in " << o->r.out_dir
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

}  // namespace

void add_export_onnx(CLI::App& app) {
  struct Opts {
    std::string model, out;
    double width = 1.0, depth = 1.0;
    OnnxOptions onnx;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "export-onnx",
      "write a model or a (width, depth) sub-network as an ONNX graph for ONNX Runtime");
  cmd->add_option("model", o->model, "checkpoint directory")->required();
  cmd->add_option("--out", o->out, "the .onnx file to write")->required();
  cmd->add_option("--width", o->width, "width multiplier (fraction of heads and FFN neurons)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--depth", o->depth, "depth multiplier (fraction of layers)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_flag("--int8", o->onnx.int8,
                "int8 weights through ONNX Runtime's DynamicQuantizeMatMul (com.microsoft)");
  cmd->add_option("--opset", o->onnx.opset, "ONNX opset (17 and up: LayerNormalization)")
      ->check(CLI::Range(13, 21))
      ->capture_default_str();
  cmd->callback([o] {
    export_onnx(o->model, SubNet{o->width, o->depth}, o->onnx, o->out);
    std::cout << "wrote " << o->out << " (" << subnet_name(SubNet{o->width, o->depth}) << ", opset "
              << o->onnx.opset << (o->onnx.int8 ? ", int8 weights" : ", fp32") << ")\n";
  });
}

namespace {

void add_stage(CLI::App* dyna, DynaStage stage, const std::string& help) {
  struct Opts {
    DynaTrainOptions d;
    std::string widths = "1,0.75,0.5,0.25", depths = "1,0.75,0.5", teacher_mode = "full";
    bool verbose = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  o->d = stage_defaults(stage);
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
  add_verbose_flag(cmd, &o->verbose);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o, cmd] {
    configure_training(o->runtime);
    o->d.widths = parse_list(o->widths, "--widths");
    o->d.depths = parse_list(o->depths, "--depths");
    o->d.same_width_teacher = o->teacher_mode == "same";
    record_run_config(cmd, o->verbose);
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
    EngineOptions engine;
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
  add_engine_options(cmd, &o->engine);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
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
    // One engine for every series, measured on the first model's shapes.
    const infer::ModelOptions engine = infer::configure_engine(
        load_config_dir(split_spec(o->models.front()).second),
        {o->engine.int8, o->g.widths, infer::parse_gemm(o->engine.gemm)}, o->runtime);
    o->g.int8 = engine.int8;
    o->g.gemm = engine.gemm;
    for (const auto& spec : o->models) {
      const auto [name, dir] = split_spec(spec);
      series.push_back({name, evaluate_grid(dir, o->g, name)});
    }
    for (const auto& spec : o->separate) {
      const auto [name, dir] = split_spec(spec);
      series.push_back({name, evaluate_separate(dir, o->g, name)});
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
