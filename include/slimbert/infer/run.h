// Running the inference model over many inputs: pooling, task evaluation, latency measurement.
// predict, embed, eval, bench, the DynaBERT grid, profile and the server all go through here.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <vector>

#include "slimbert/infer/model.h"
#include "slimbert/train/finetune.h"

namespace slimbert::infer {

enum class Pooling { kCls, kMean };
Pooling parse_pooling(const std::string& name);  // "cls" | "mean"
// Sentence vectors (B, H) of the last layer: [CLS], or the mean over the unpadded tokens.
at::Tensor pool(const Output& output, const Batch& batch, Pooling pooling);

// The model's logits at `subnet`, for the task code (predict_logits, evaluate_task).
LogitsFn logits_fn(const InferenceModel& model, const SubNet& subnet);

// Scores `model` at `subnet` on a split of a task.
EvalReport evaluate(const InferenceModel& model, const Tokenizer& tokenizer, const TaskSpec& spec,
                    const std::string& split, int64_t max_length, int64_t batch_size,
                    const SubNet& subnet = {});

// Forward latency at `subnet` on random tokens (batch x seq, no padding), in ms.
struct Latency {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};
Latency measure_latency(const InferenceModel& model, int64_t batch, int64_t seq,
                        const SubNet& subnet, int64_t iters, int64_t warmup);
// Nearest-rank percentile p (0-100) of `values` (not empty).
double percentile(std::vector<double> values, double p);

}  // namespace slimbert::infer
