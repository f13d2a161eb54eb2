// slimbert dynabert: rewiring a fine-tuned model by importance, and exporting sub-networks.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>

#include "commands.h"
#include "common.h"
#include "slimbert/core/fs.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {
namespace {

nlohmann::json rows_of(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    const at::Tensor row = t[r].contiguous().to(at::kDouble);
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
    ThreadConfig threads;
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
  cmd->add_option("--max-length", o->max_length, "tokens per example")->capture_default_str();
  cmd->add_option("--seed", o->seed, "subset seed")->capture_default_str();
  cmd->add_flag("--per-batch-gradients", o->per_batch,
                "score each batch's own gradient (the reference accumulates them)");
  cmd->add_flag("--skip-bad-rows", o->skip_bad_rows, "skip malformed rows instead of failing");
  add_thread_options(cmd, &o->threads);
  cmd->callback([o] {
    configure_threads(o->threads);
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
    for (const auto& order : head_order(imp))
      report["head_order"].push_back(rows_of(order.view({1, -1}))[0]);
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
    std::string model, out;
    double width = 1.0, depth = 1.0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = dyna->add_subcommand(
      "export", "write the (width, depth) sub-network as a standalone HF checkpoint");
  cmd->add_option("--model", o->model, "rewired / DynaBERT model")->required();
  cmd->add_option("--width", o->width, "width multiplier (fraction of heads and FFN neurons)")
      ->capture_default_str();
  cmd->add_option("--depth", o->depth, "depth multiplier (fraction of layers)")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->callback([o] {
    const BertConfig c = export_subnet(o->model, SubNet{o->width, o->depth}, o->out);
    std::cout << "exported width " << o->width << ", depth " << o->depth << " to " << o->out << ": "
              << c.num_hidden_layers << " layers, " << c.heads_in_layer(0) << " heads, FFN "
              << c.intermediate_size << "\n";
  });
}

}  // namespace

void add_dynabert(CLI::App& app) {
  auto* dyna = app.add_subcommand("dynabert", "DynaBERT: one model for any width and depth");
  dyna->require_subcommand(1);
  add_rewire(dyna);
  add_export(dyna);
}

}  // namespace slimbert::cli
