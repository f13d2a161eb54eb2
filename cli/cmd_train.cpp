#include <filesystem>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/data/corpus.h"
#include "slimbert/train/pretrain.h"

namespace slimbert::cli {

void add_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "prepare training data");
  data->require_subcommand(1);
  struct Opts {
    std::vector<std::string> inputs;
    std::string tokenizer_dir, out;
    ShardOptions shards;
    ThreadConfig threads;
  };
  auto o = std::make_shared<Opts>();
  auto* shards = data->add_subcommand(
      "shards", "tokenize text files (documents separated by blank lines) into packed MLM shards");
  shards->add_option("inputs", o->inputs, "corpus text files")->required();
  shards->add_option("--tokenizer", o->tokenizer_dir, "directory with vocab.txt (and tokenizer_config.json)")
      ->required();
  shards->add_option("--out", o->out, "output directory")->required();
  shards->add_option("--seq", o->shards.seq_len, "tokens per sequence")->capture_default_str();
  shards->add_option("--validation-fraction", o->shards.validation_fraction, "documents held out")
      ->capture_default_str();
  add_thread_options(shards, &o->threads);
  shards->callback([o] {
    configure_threads(o->threads);
    o->shards.threads = o->threads.threads > 0 ? o->threads.threads : 2;
    const ShardStats s = build_shards(o->inputs, Tokenizer::from_dir(o->tokenizer_dir), o->out, o->shards);
    std::cout << "wrote " << o->out << ": " << format_count(s.documents) << " documents, "
              << format_count(s.tokens) << " tokens, " << format_count(s.train_sequences) << " train and "
              << format_count(s.validation_sequences) << " validation sequences of " << o->shards.seq_len
              << " tokens\n";
  });
}

void add_pretrain(CLI::App& app) {
  struct Opts {
    PretrainOptions p;
    std::string optimizer = "adamw";
    ThreadConfig threads;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("pretrain", "MLM (continued) pretraining on corpus shards");
  cmd->add_option("--init", o->p.init_dir, "checkpoint to start from (e.g. from `slimbert init`)")->required();
  cmd->add_option("--shards", o->p.shards_dir, "shards directory (`slimbert data shards`)")->required();
  cmd->add_option("--out", o->p.out_dir, "output directory: checkpoints/, model/, metrics.jsonl")->required();
  cmd->add_option("--steps", o->p.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", o->p.batch_size, "sequences per micro-batch")->capture_default_str();
  cmd->add_option("--accumulation", o->p.accumulation, "micro-batches per step")->capture_default_str();
  cmd->add_option("--lr", o->p.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", o->p.weight_decay, "decoupled weight decay")->capture_default_str();
  cmd->add_option("--warmup", o->p.warmup_fraction, "warm-up fraction of the steps")->capture_default_str();
  cmd->add_option("--clip", o->p.clip, "max gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--optimizer", o->optimizer, "adamw (torch) or bert-adamw (no bias correction)")
      ->check(CLI::IsMember({"adamw", "bert-adamw"}))
      ->capture_default_str();
  cmd->add_option("--seed", o->p.seed, "seed for data order, masking, dropout")->capture_default_str();
  cmd->add_option("--log-every", o->p.log_every, "steps per progress line")->capture_default_str();
  cmd->add_option("--eval-every", o->p.eval_every, "steps per validation")->capture_default_str();
  cmd->add_option("--eval-batches", o->p.eval_batches, "validation batches")->capture_default_str();
  cmd->add_option("--save-every", o->p.save_every, "steps per checkpoint")->capture_default_str();
  cmd->add_option("--keep-last", o->p.keep_last, "checkpoints kept")->capture_default_str();
  cmd->add_option("--max-minutes", o->p.max_minutes, "checkpoint and stop after this wall time (0 = no limit)");
  cmd->add_option("--stop-after", o->p.stop_after, "checkpoint and stop after this many steps (0 = run to the end)");
  cmd->add_flag("--resume", o->p.resume, "continue from the newest checkpoint in --out");
  cmd->add_flag("--fp16-final", o->p.float16_final, "store the final model in float16");
  add_thread_options(cmd, &o->threads);
  cmd->callback([o, cmd] {
    configure_threads(o->threads);
    o->p.optimizer = o->optimizer == "bert-adamw" ? AdamVariant::kBert : AdamVariant::kTorch;
    std::cerr << "pretrain config:\n" << cmd->config_to_str(true, false) << "threads: " << describe_threads() << "\n";
    const PretrainResult r = pretrain(o->p);
    std::cout << (r.finished ? "finished" : "stopped") << " at step " << r.step << "; validation loss "
              << r.validation_loss << ", MLM accuracy " << r.validation_accuracy << "\n";
  });
}

}  // namespace slimbert::cli
