#include "slimbert/infer/run.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "slimbert/core/error.h"
#include "slimbert/data/metrics.h"

namespace slimbert {

at::Tensor predict_logits(const LogitsFn& logits_of, const std::vector<Encoding>& inputs,
                          int64_t pad_id, int64_t batch_size) {
  std::vector<at::Tensor> parts;
  std::vector<int64_t> rows;
  for (const auto& idx : length_sorted_batches(inputs, {batch_size, 0})) {
    // One copy to the host per batch, not a device sync per row.
    parts.push_back(logits_of(collate(inputs, idx, pad_id)).cpu());
    rows.insert(rows.end(), idx.begin(), idx.end());
  }
  const at::Tensor sorted = at::cat(parts);
  at::Tensor out = at::empty_like(sorted);
  out.index_copy_(0, at::tensor(rows), sorted);
  return out;
}

EvalReport evaluate_task(const LogitsFn& logits_of, const Tokenizer& tokenizer,
                         const TaskSpec& spec, const std::string& split, int64_t max_length,
                         int64_t batch_size) {
  const TaskData data = spec.load(split);
  const EncodedTask enc = encode_task(tokenizer, spec, data, max_length, true);
  const at::Tensor logits = predict_logits(logits_of, enc.inputs, tokenizer.pad_id(), batch_size);
  EvalReport r{spec.display_name(), split, static_cast<int64_t>(enc.inputs.size()), {}};
  if (spec.regression) {
    const at::Tensor v = logits.select(1, 0).to(at::kDouble).contiguous();
    const std::vector<double> scores(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
    r.metrics = regression_metrics(scores, enc.values);
  } else {
    const at::Tensor p = logits.argmax(1).contiguous();
    const std::vector<int64_t> pred(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
    r.metrics = classification_metrics(pred, enc.labels, spec.main_metric);
  }
  return r;
}

}  // namespace slimbert

namespace slimbert::infer {

int64_t max_input_length(const BertConfig& config, const Tokenizer& tokenizer, int64_t user_max) {
  int64_t m = std::min(config.max_sequence_length(), tokenizer.options().model_max_length);
  if (user_max > 0) m = std::min(m, user_max);
  return m;
}

FittedEncoding encode_within(const Tokenizer& tokenizer, const std::string& text,
                             const std::optional<std::string>& pair, int64_t limit, bool truncate,
                             TruncationSide side) {
  FittedEncoding out;
  out.encoding = tokenizer.encode(text, pair, EncodeOptions{std::nullopt, Truncation::kNone});
  out.tokens = static_cast<int64_t>(out.encoding.input_ids.size());
  if (out.tokens > limit && truncate) {
    EncodeOptions o{limit, Truncation::kLongestFirst};
    o.side = side;
    out.encoding = tokenizer.encode(text, pair, o);
  }
  return out;
}

Pooling parse_pooling(const std::string& name) {
  for (Pooling p : {Pooling::kCls, Pooling::kMean, Pooling::kMax, Pooling::kLastToken})
    if (name == pooling_name(p)) return p;
  fail("pooling must be cls, mean, max or lasttoken, got '", name, "'");
}

const char* pooling_name(Pooling pooling) {
  switch (pooling) {
    case Pooling::kCls:
      return "cls";
    case Pooling::kMean:
      return "mean";
    case Pooling::kMax:
      return "max";
    case Pooling::kLastToken:
      return "lasttoken";
  }
  return "cls";
}

at::Tensor pool(const Output& output, const Batch& batch, Pooling pooling) {
  return pool(output.last, batch, pooling);
}

at::Tensor pool(const at::Tensor& h, const Batch& batch, Pooling pooling) {
  if (pooling == Pooling::kCls) return h.select(1, 0);
  const bool masked = batch.attention_mask.defined();
  const at::Tensor mask =
      masked ? batch.attention_mask.to(h.device(), at::kFloat).unsqueeze(-1) : at::Tensor();
  // Mean and max leave out what the pooling mask does (a prompt); the last token stays the
  // last unpadded one.
  const at::Tensor pooled_mask =
      batch.pool_mask.defined() ? batch.pool_mask.to(h.device(), at::kFloat).unsqueeze(-1) : mask;
  switch (pooling) {
    case Pooling::kMean:
      return masked ? (h * pooled_mask).sum(1) / pooled_mask.sum(1).clamp_min(1e-9) : h.mean(1);
    case Pooling::kMax:  // padding never wins (sentence-transformers sets it to -1e9)
      return masked ? h.masked_fill(pooled_mask == 0, -1e9).amax(1) : h.amax(1);
    case Pooling::kLastToken: {
      // The last unpadded position of each row (rows are padded on the right).
      const at::Tensor last =
          masked ? mask.squeeze(-1).sum(1).to(at::kLong) - 1
                 : at::full({h.size(0)}, h.size(1) - 1, h.options().dtype(at::kLong));
      return h.gather(1, last.view({-1, 1, 1}).expand({h.size(0), 1, h.size(2)})).squeeze(1);
    }
    case Pooling::kCls:
      break;
  }
  return h.select(1, 0);
}

const at::Tensor& RowOutputs::pooled(Pooling pooling) const {
  const at::Tensor& t = const_cast<RowOutputs*>(this)->pooled(pooling);
  if (!t.defined()) fail("run_rows: ", pooling_name(pooling), " pooling was not asked for");
  return t;
}

at::Tensor& RowOutputs::pooled(Pooling pooling) {
  switch (pooling) {
    case Pooling::kMean:
      return mean;
    case Pooling::kMax:
      return max;
    case Pooling::kLastToken:
      return last;
    case Pooling::kCls:
      break;
  }
  return cls;
}

RowOutputs RowOutputs::rows(int64_t begin, int64_t n) const {
  RowOutputs out;
  for (auto [from, to] :
       {std::pair{&cls, &out.cls}, std::pair{&mean, &out.mean}, std::pair{&max, &out.max},
        std::pair{&last, &out.last}, std::pair{&logits, &out.logits}})
    if (from->defined()) *to = from->narrow(0, begin, n);
  for (auto [from, to] : {std::pair{&tokens, &out.tokens}, std::pair{&sparse, &out.sparse}})
    if (!from->empty()) to->assign(from->begin() + begin, from->begin() + begin + n);
  return out;
}

at::Tensor normalize(const at::Tensor& rows) {
  return rows / rows.norm(2, 1, true).clamp_min(1e-12);
}

at::Tensor label_scores(const BertConfig& config, const at::Tensor& logits, bool raw) {
  if (raw) return logits;
  if (config.is_sigmoid_cross_encoder() || config.problem_type == "multi_label_classification")
    return at::sigmoid(logits);
  if (config.is_regression()) return logits;
  return at::softmax(logits, -1);
}

RowOutputs run_rows(const InferenceModel& model, const std::vector<Encoding>& inputs,
                    const SubNet& subnet, int64_t pad_id, const BatchLimits& limits,
                    const RowWants& wants) {
  const auto rows = static_cast<int64_t>(inputs.size());
  const int64_t H = model.config().hidden_size;
  RowOutputs out;
  for (Pooling p : wants.poolings) out.pooled(p) = at::empty({rows, H});
  if (model.has_classifier()) out.logits = at::empty({rows, model.config().num_labels()});
  if (wants.tokens) out.tokens.resize(static_cast<size_t>(rows));
  if (wants.sparse) out.sparse.resize(static_cast<size_t>(rows));
  for (const auto& idx : length_sorted_batches(inputs, limits)) {
    const Batch batch = collate(inputs, idx, pad_id);
    const Output o = model.forward(batch, subnet);
    const at::Tensor at_rows = at::tensor(std::vector<int64_t>(idx.begin(), idx.end()));
    for (Pooling p : wants.poolings) out.pooled(p).index_copy_(0, at_rows, pool(o, batch, p).cpu());
    if (out.logits.defined()) out.logits.index_copy_(0, at_rows, o.logits.cpu());
    for (size_t k = 0; k < idx.size() && (wants.tokens || wants.sparse); ++k) {
      const auto row = static_cast<size_t>(idx[k]);
      const auto len = static_cast<int64_t>(inputs[row].input_ids.size());
      const at::Tensor last = o.last[static_cast<int64_t>(k)].narrow(0, 0, len);
      if (wants.tokens) out.tokens[row] = last.cpu();
      // A row at a time: the vocabulary logits of a whole batch would take (B, T, V) floats.
      if (wants.sparse) out.sparse[row] = at::log1p(at::relu(model.mlm_logits(last))).amax(0).cpu();
    }
  }
  return out;
}

LogitsFn logits_fn(const InferenceModel& model, const SubNet& subnet) {
  if (!model.has_classifier())
    fail(model.dir(), ": no classifier in this checkpoint (classifier.weight): fine-tune it first");
  return [&model, subnet](const Batch& batch) { return model.forward(batch, subnet).logits; };
}

EvalReport evaluate(const InferenceModel& model, const Tokenizer& tokenizer, const TaskSpec& spec,
                    const std::string& split, int64_t max_length, int64_t batch_size,
                    const SubNet& subnet) {
  return evaluate_task(logits_fn(model, subnet), tokenizer, spec, split, max_length, batch_size);
}

}  // namespace slimbert::infer
