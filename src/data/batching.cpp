#include "slimbert/data/batching.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "slimbert/core/error.h"

namespace slimbert {

Batch collate(const std::vector<Encoding>& encodings, const std::vector<size_t>& indices,
              int64_t pad_id) {
  size_t T = 0;
  for (size_t i : indices) T = std::max(T, encodings.at(i).input_ids.size());
  const int64_t B = static_cast<int64_t>(indices.size()), L = static_cast<int64_t>(T);
  at::Tensor ids = at::full({B, L}, pad_id, at::kLong);
  at::Tensor types = at::zeros({B, L}, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kLong);
  int64_t *pi = ids.data_ptr<int64_t>(), *pt = types.data_ptr<int64_t>(),
          *pm = mask.data_ptr<int64_t>();
  for (size_t r = 0; r < indices.size(); ++r) {
    const Encoding& e = encodings[indices[r]];
    for (size_t t = 0; t < e.input_ids.size(); ++t) {
      pi[r * T + t] = e.input_ids[t];
      pt[r * T + t] = e.token_type_ids[t];
      pm[r * T + t] = 1;
    }
  }
  Batch batch{ids, types, mask};
  for (size_t r = 0; r < indices.size(); ++r) {
    const int64_t from = std::min<int64_t>(encodings[indices[r]].pool_from, L);
    if (from <= 0) continue;
    if (!batch.pool_mask.defined()) batch.pool_mask = mask.clone();
    batch.pool_mask[static_cast<int64_t>(r)].narrow(0, 0, from).zero_();
  }
  return batch;
}

Batch batch_of(const std::vector<Encoding>& encodings, const std::vector<size_t>& order,
               size_t begin, size_t end, int64_t pad_id) {
  return collate(encodings,
                 std::vector<size_t>(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                     order.begin() + static_cast<std::ptrdiff_t>(end)),
                 pad_id);
}

std::vector<std::vector<size_t>> length_sorted_batches(const std::vector<Encoding>& encodings,
                                                       const BatchLimits& limits) {
  std::vector<size_t> order(encodings.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return encodings[a].input_ids.size() < encodings[b].input_ids.size();
  });
  // In length order, the padded size of rows [b, e] is (e + 1 - b) x the length of row e.
  auto fits = [&](size_t b, size_t e) {
    const auto rows = static_cast<int64_t>(e + 1 - b);
    const auto len = static_cast<int64_t>(encodings[order[e]].input_ids.size());
    return (limits.max_rows <= 0 || rows <= limits.max_rows) &&
           (limits.max_tokens <= 0 || rows * len <= limits.max_tokens);
  };
  std::vector<std::vector<size_t>> batches;
  for (size_t b = 0; b < order.size();) {
    size_t e = b + 1;
    while (e < order.size() && fits(b, e)) ++e;
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(b),
                         order.begin() + static_cast<std::ptrdiff_t>(e));
    b = e;
  }
  return batches;
}

EncodedTask encode_task(const Tokenizer& tokenizer, const TaskSpec& spec, const TaskData& data,
                        int64_t max_length, bool need_labels) {
  EncodedTask out;
  for (const auto& e : data.examples) {
    out.inputs.push_back(
        tokenizer.encode(e.text_a, e.text_b, EncodeOptions{max_length, Truncation::kLongestFirst}));
    if (!need_labels) continue;
    if (e.label.empty()) fail(data.source, ":", e.line, ": example has no label");
    if (spec.regression) {
      const auto v = label_number(e.label);
      if (!v) fail(data.source, ":", e.line, ": label '", e.label, "' is not a number");
      out.values.push_back(*v);
    } else {
      out.labels.push_back(spec.label_index(e, data.source));
    }
  }
  if (out.inputs.empty()) fail(data.source, ": no examples");
  return out;
}

}  // namespace slimbert
