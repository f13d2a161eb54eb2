// A small synthetic MLM world shared by the trainer and WID tests: a 64-token vocabulary, a
// corpus of recurring sentences in shards, and a tiny random BERT checkpoint.
#pragma once

#include <filesystem>
#include <random>

#include "slimbert/core/fs.h"
#include "slimbert/data/corpus.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/finetune.h"
#include "slimbert/train/pretrain.h"
#include "test_util.h"

namespace slimbert::test {

struct World {
  TempDir dir;
  Tokenizer tokenizer{Vocab::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}),
                      TokenizerOptions{}};
  std::string init, shards;

  World() {
    std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","};
    for (int i = 0; i < 57; ++i) tokens.push_back("w" + std::to_string(i));
    tokenizer = Tokenizer(Vocab::from_tokens(tokens), TokenizerOptions{});
    // Documents with structure to learn: five recurring sentences "wK wK+1 ... wK+5 .".
    std::string text;
    for (int d = 0; d < 300; ++d) {
      text += "doc" + std::to_string(d) + "\n";  // distinct texts (for the split); an [UNK] token
      for (int s = 0; s < 3; ++s) {
        const int start = ((d + s) % 5) * 10;
        for (int k = 0; k < 6; ++k) text += "w" + std::to_string(start + k) + " ";
        text += ".\n";
      }
      text += "\n";
    }
    write_file_atomic(dir / "corpus.txt", text);
    const BertConfig c = test::tiny_config(tokenizer.vocab().size(), 64);
    BertForMaskedLM model(c);
    init_weights(*model, c, 3);
    init = dir / "init";
    save_checkpoint(init, c, *model, tokenizer);
    shards = dir / "shards";
    ShardOptions so;
    so.seq_len = 32;
    so.validation_fraction = 0.1;
    so.sequences_per_shard = 100;  // several shard files
    build_shards({dir / "corpus.txt"}, tokenizer, shards, so);
  }

  PretrainOptions options(const std::string& out) const {
    PretrainOptions o;
    o.init_dir = init;
    o.shards_dir = shards;
    o.out_dir = dir / out;
    o.steps = 8;
    o.batch_size = 8;
    o.lr = 3e-3;
    o.warmup_fraction = 0.25;
    o.log_every = 4;
    o.eval_every = 4;
    o.eval_batches = 2;
    o.save_every = 4;
    return o;
  }
};

inline const World& world() {
  static World w;
  return w;
}

// A learnable two-class task over the world's words in `dir` (train.tsv 160 rows, dev.tsv 48):
// "low" when more of a row's eight words are among w0..w9 than among w10..w19.
inline void write_word_count_task(const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(4);
  for (const auto& [split, n] : {std::pair{"train", 160}, std::pair{"dev", 48}}) {
    std::string tsv = "sentence\tlabel\n";
    for (int i = 0; i < n; ++i) {
      std::string text;
      int low = 0, high = 0;
      for (int k = 0; k < 8; ++k) {
        const int word = static_cast<int>(rng() % 20);
        (word < 10 ? low : high) += 1;
        text += (k ? " w" : "w") + std::to_string(word);
      }
      tsv += text + "\t" + (low > high ? "low" : "high") + "\n";
    }
    write_file_atomic(dir + "/" + split + ".tsv", tsv);
  }
}

// `init` fine-tuned on the word-count task at `task` into `out`: 2 epochs at lr 1e-3, batch 16,
// 16 tokens. Returns the best checkpoint's directory.
inline std::string finetune_word_count_teacher(const std::string& init, const std::string& task,
                                               const std::string& out) {
  FinetuneOptions f;
  f.model_dir = init;
  f.task = "tsv";
  f.data_dir = task;
  f.out_dir = out;
  f.epochs = 2;
  f.batch_size = 16;
  f.max_length = 16;
  f.lr = 1e-3;
  f.log_every = 100;
  finetune(f);
  return out + "/best";
}

}  // namespace slimbert::test
