// Running the inference model over many inputs: the one path that predict, embed, eval, the
// DynaBERT grid, the trainers' evaluation and the server share. Tokenized rows go in batches
// (data/batching.h) through a model; out come pooled vectors, label scores and task metrics.
#pragma once

#include <ATen/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "slimbert/data/batching.h"
#include "slimbert/data/tasks.h"
#include "slimbert/infer/latency.h"
#include "slimbert/infer/model.h"
#include "slimbert/model/config.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert {

// Logits of one padded batch: a training model in eval mode, or the inference model.
using LogitsFn = std::function<at::Tensor(const Batch&)>;
// Logits for every row of `inputs` ([rows, outputs], host, row order), computed in length order
// in batches of `batch_size`.
at::Tensor predict_logits(const LogitsFn& logits_of, const std::vector<Encoding>& inputs,
                          int64_t pad_id, int64_t batch_size);

struct EvalReport {
  std::string task, split;
  int64_t examples = 0;
  std::map<std::string, double> metrics;  // includes "main"
};
// Scores the logits of a split; the label order is the model's id2label.
EvalReport evaluate_task(const LogitsFn& logits_of, const Tokenizer& tokenizer,
                         const TaskSpec& spec, const std::string& split, int64_t max_length,
                         int64_t batch_size);

}  // namespace slimbert

namespace slimbert::infer {

// Longest input the model accepts: max_position_embeddings, capped by the tokenizer's
// model_max_length and by `user_max` when positive.
int64_t max_input_length(const BertConfig& config, const Tokenizer& tokenizer, int64_t user_max);

// A text (or pair) tokenized against a length limit: whole when it fits; over the limit, truncated
// longest-first to it when `truncate`, else returned whole for the caller to refuse.
struct FittedEncoding {
  Encoding encoding;
  int64_t tokens = 0;  // before any truncation
};
FittedEncoding encode_within(const Tokenizer& tokenizer, const std::string& text,
                             const std::optional<std::string>& pair, int64_t limit, bool truncate,
                             TruncationSide side = TruncationSide::kRight);

// sentence-transformers' pooling modes: the first token ([CLS]), the mean or the element-wise
// max over the unpadded tokens, or the last unpadded token.
enum class Pooling { kCls, kMean, kMax, kLastToken };
Pooling parse_pooling(const std::string& name);  // "cls" | "mean" | "max" | "lasttoken"
const char* pooling_name(Pooling pooling);
// Sentence vectors (B, H) of the last layer (B, T, H); differentiable.
at::Tensor pool(const at::Tensor& last, const Batch& batch, Pooling pooling);
at::Tensor pool(const Output& output, const Batch& batch, Pooling pooling);
// Rows scaled to unit length (a zero row stays zero).
at::Tensor normalize(const at::Tensor& rows);
// What a classifier's logits (rows, labels) say per label: the logits themselves for a
// regressor or when `raw`, else sigmoid for multi-label and softmax for single-label problems.
at::Tensor label_scores(const BertConfig& config, const at::Tensor& logits, bool raw);

// Every row of `inputs` through `model` at `subnet`, in length-sorted batches within `limits`;
// outputs on the host in row order.
struct RowOutputs {
  at::Tensor cls, mean, max, last;  // (rows, H): the last layer pooled each way
  at::Tensor logits;                // (rows, labels); undefined without a classifier
  std::vector<at::Tensor> tokens;   // per row (tokens, H): the last layer, when asked
  // Per row (V): SPLADE's max over tokens of log(1 + relu(MLM logit)), when asked.
  std::vector<at::Tensor> sparse;

  // A pooling run_rows was asked for (an error otherwise).
  const at::Tensor& pooled(Pooling pooling) const;
  at::Tensor& pooled(Pooling pooling);
  // Rows [begin, begin + n).
  RowOutputs rows(int64_t begin, int64_t n) const;
};
struct RowWants {
  std::vector<Pooling> poolings;  // sentence vectors to pool; the others stay undefined
  bool tokens = false;
  bool sparse = false;  // needs the masked-LM head
};
RowOutputs run_rows(const InferenceModel& model, const std::vector<Encoding>& inputs,
                    const SubNet& subnet, int64_t pad_id, const BatchLimits& limits,
                    const RowWants& wants = {});

// The model's logits at `subnet`, for predict_logits and evaluate_task.
LogitsFn logits_fn(const InferenceModel& model, const SubNet& subnet);
// Scores `model` at `subnet` on a split of a task.
EvalReport evaluate(const InferenceModel& model, const Tokenizer& tokenizer, const TaskSpec& spec,
                    const std::string& split, int64_t max_length, int64_t batch_size,
                    const SubNet& subnet = {});

}  // namespace slimbert::infer
