#include "slimbert/data/mlm.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "slimbert/core/error.h"

namespace slimbert {

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(a) ^ b) ^ c);
}

MlmBatch mask_tokens(const at::Tensor& ids, const at::Tensor& lengths, const MaskingOptions& o,
                     uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t B = ids.size(0), T = ids.size(1);
  MlmBatch batch;
  at::Tensor positions_in_row = at::arange(T, at::kLong).unsqueeze(0).expand({B, T});
  batch.attention_mask = positions_in_row.lt(lengths.unsqueeze(1)).to(at::kLong);
  at::Tensor candidate = batch.attention_mask.to(at::kBool);
  for (int64_t s : o.special_ids) candidate &= ids.ne(s);

  at::Tensor chosen = at::rand({B, T}, gen).lt(o.probability) & candidate;
  if (!chosen.any().item<bool>() && candidate.any().item<bool>()) {
    // Every batch trains on at least one position.
    chosen.view(-1)[candidate.view(-1).nonzero()[0][0]] = true;
  }
  at::Tensor r = at::rand({B, T}, gen);
  at::Tensor to_mask = chosen & r.lt(o.mask_fraction);
  at::Tensor to_random = chosen & r.ge(o.mask_fraction) & r.lt(o.mask_fraction + o.random_fraction);
  at::Tensor random_ids = at::randint(o.vocab_size, {B, T}, gen, at::kLong);

  batch.input_ids = ids.clone();
  batch.input_ids.masked_fill_(to_mask, o.mask_id);
  batch.input_ids = at::where(to_random, random_ids, batch.input_ids);
  batch.positions = chosen.view(-1).nonzero().view(-1);
  batch.labels = ids.reshape(-1).index_select(0, batch.positions);
  batch.tokens = lengths.sum().item<int64_t>();
  return batch;
}

MlmLoader::MlmLoader(const ShardSet& shards, int64_t batch_size, MaskingOptions masking,
                     uint64_t seed)
    : shards_(shards), batch_size_(batch_size), masking_(std::move(masking)), seed_(seed) {
  if (shards_.size() < batch_size_)
    fail("corpus has ", shards_.size(), " sequences, fewer than one batch of ", batch_size_);
  shuffle();
}

int64_t MlmLoader::batches_per_epoch() const {
  return shards_.size() / batch_size_;
}

void MlmLoader::shuffle() {
  order_.resize(static_cast<size_t>(shards_.size()));
  std::iota(order_.begin(), order_.end(), 0);
  std::mt19937_64 rng(mix_seed(seed_, static_cast<uint64_t>(epoch_), 1));
  std::shuffle(order_.begin(), order_.end(), rng);
}

void MlmLoader::seek(int64_t epoch, int64_t offset) {
  if (epoch < 0 || offset < 0 || offset > shards_.size())
    fail("data position epoch ", epoch, ", offset ", offset, " is outside the ", shards_.size(),
         " training sequences");
  epoch_ = epoch;
  offset_ = offset;
  shuffle();
}

MlmBatch MlmLoader::next() {
  if (offset_ + batch_size_ > shards_.size()) {  // drop the last partial batch, next epoch
    ++epoch_;
    offset_ = 0;
    shuffle();
  }
  const int64_t T = shards_.seq_len();
  at::Tensor ids = at::zeros({batch_size_, T}, at::kLong);
  at::Tensor lengths = at::zeros({batch_size_}, at::kLong);
  int64_t* p = ids.data_ptr<int64_t>();
  int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch_size_; ++b)
    len[b] = shards_.read(order_[static_cast<size_t>(offset_ + b)], p + b * T);
  const uint64_t seed =
      mix_seed(seed_, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(offset_) + 2);
  offset_ += batch_size_;
  return mask_tokens(ids, lengths, masking_, seed);
}

}  // namespace slimbert
