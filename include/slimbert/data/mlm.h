// Masked-language-model batches: BERT's dynamic masking, re-drawn every epoch, reproducible
// from (seed, epoch, batch) so that a resumed run sees exactly the batches it would have seen.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "slimbert/data/corpus.h"

namespace slimbert {

struct MaskingOptions {
  double probability = 0.15;     // of non-special tokens
  double mask_fraction = 0.8;    // of those: replaced by [MASK]
  double random_fraction = 0.1;  // replaced by a random token; the rest stay unchanged
  int64_t mask_id = 103;
  int64_t vocab_size = 30522;
  std::vector<int64_t> special_ids;  // never masked ([CLS], [SEP], [PAD], ...)
};

struct MlmBatch {
  at::Tensor input_ids;       // (B, T) with masking applied
  at::Tensor attention_mask;  // (B, T)
  at::Tensor positions;       // (N) flat indices into B*T of the masked positions
  at::Tensor labels;          // (N) original ids at those positions
  int64_t tokens = 0;         // real (unpadded) tokens
};

// Masks `ids` (B, T int64, 0-padded to `lengths`) with its own generator seeded by `seed`.
MlmBatch mask_tokens(const at::Tensor& ids, const at::Tensor& lengths,
                     const MaskingOptions& options, uint64_t seed);

// Walks a ShardSet in a seeded random order per epoch; the cursor (epoch, offset) is all the
// state needed to resume.
class MlmLoader {
 public:
  MlmLoader(const ShardSet& shards, int64_t batch_size, MaskingOptions masking, uint64_t seed);
  MlmBatch next();
  int64_t epoch() const { return epoch_; }
  int64_t offset() const { return offset_; }
  void seek(int64_t epoch, int64_t offset);
  int64_t batches_per_epoch() const;

 private:
  void shuffle();
  const ShardSet& shards_;
  int64_t batch_size_;
  MaskingOptions masking_;
  uint64_t seed_;
  int64_t epoch_ = 0, offset_ = 0;
  std::vector<int64_t> order_;
};

// One deterministic 64-bit seed from several values (splitmix64 mixing).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace slimbert
