// Rows of tokens into model batches: padding, length-sorted batches within row and token limits,
// and a task split tokenized. Every command, the server, the grid and the trainers batch here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "slimbert/data/tasks.h"
#include "slimbert/model/bert.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert {

// Stacks the encodings `indices` (in that order) into one batch padded to the longest with
// `pad_id`, attention mask 0 on padding.
Batch collate(const std::vector<Encoding>& encodings, const std::vector<size_t>& indices,
              int64_t pad_id);
// Rows order[begin, end) as one padded batch.
Batch batch_of(const std::vector<Encoding>& encodings, const std::vector<size_t>& order,
               size_t begin, size_t end, int64_t pad_id);

// The size of one batch; 0 = no limit. A row longer than max_tokens is a batch of its own.
struct BatchLimits {
  int64_t max_rows = 0;
  int64_t max_tokens = 0;  // padded tokens: rows x the longest row
};
// Row indices of `encodings` in batches within `limits`, shortest first (stable): less padding,
// the same result per row.
std::vector<std::vector<size_t>> length_sorted_batches(const std::vector<Encoding>& encodings,
                                                       const BatchLimits& limits);

// A split tokenized, with class indices (or regression targets) in example order.
struct EncodedTask {
  std::vector<Encoding> inputs;
  std::vector<int64_t> labels;  // class index
  std::vector<double> values;   // regression targets
};
EncodedTask encode_task(const Tokenizer& tokenizer, const TaskSpec& spec, const TaskData& data,
                        int64_t max_length, bool need_labels);

}  // namespace slimbert
