// MLM corpus pipeline: text files -> tokenized, packed sequences in binary shards.
//
// Text format: plain UTF-8, documents separated by blank lines. Packing (RoBERTa's
// "full sentences"): [CLS] doc tokens [SEP] next doc tokens [SEP] ... up to seq_len, a document
// continuing into the next sequence when it does not fit; the [SEP]s mark document boundaries.
// Documents go to the validation split by a hash of their text, so the split is stable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "slimbert/text/tokenizer.h"

namespace slimbert {

struct ShardOptions {
  int64_t seq_len = 128;
  double validation_fraction = 0.01;
  int64_t sequences_per_shard = 65536;
  int threads = 2;  // tokenizer threads
};

struct ShardStats {
  int64_t documents = 0, train_sequences = 0, validation_sequences = 0, tokens = 0;
};

// Tokenizes `inputs` (streamed, a block of documents at a time, in parallel) and writes
// OUT/train-00000.bin ..., OUT/validation-00000.bin ..., OUT/shards.json. Fails on an empty
// corpus. Output is identical for any thread count.
ShardStats build_shards(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                        const std::string& out_dir, const ShardOptions& options);

// The sequences of one split, memory-mapped: row i holds length(i) token ids.
class ShardSet {
 public:
  static ShardSet open(const std::string& dir, const std::string& split);  // "train" | "validation"
  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  int64_t seq_len() const { return seq_len_; }
  // The vocabulary size of the tokenizer that made them (shards.json), 0 when not recorded.
  int64_t vocab_size() const { return vocab_size_; }
  // Copies sequence i into `out` (length seq_len, padded with 0); returns its length.
  int64_t read(int64_t i, int64_t* out) const;

 private:
  struct File;
  std::vector<std::shared_ptr<File>> files_;
  std::vector<std::pair<uint32_t, uint32_t>> index_;  // (file, row)
  int64_t seq_len_ = 0, vocab_size_ = 0;
};

}  // namespace slimbert
