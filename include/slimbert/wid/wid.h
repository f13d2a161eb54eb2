// WID — Weight-Inherited Distillation (ALGORITHMS.md Part A).
//
// Every linear map of the teacher gets an identity-initialised input-side ("row", L) and
// output-side ("column", R) compactor: y = R (W (L x) + b). Training is plain MLM while a schedule
// marks compactor rows/columns as removed (smallest norms) and gradient surgery pulls them to
// zero; merging multiplies the kept parts into the weights: a dense, narrower HF BERT.
//
// Compactors act on the weights (W' = R W L, b' = R b): with 4k tokens per step and d <= 1k this
// costs a fraction of applying them to activations, with the same gradients.
//
// Differences from the reference (UER) code, all deliberate:
//  - HF BERT ties the MLM decoder to the word embeddings. The tie survives the merge because the
//    decoder shares the embedding compactor (logits = t C_E E^T) and the MLM transform lives on
//    the residual mask; the reference's untied decoder has its own transform mask M_t instead.
//  - LayerNorm is HF's (biased variance, eps inside the root), over kept dims once pruning starts:
//    exactly what the merged student computes.
//  - Removal counts are exact (stable sort, no "score <= k-th" ties), schedules never stall on
//    small widths, and names carry no DDP prefix (§A.13).
#pragma once

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "slimbert/model/bert.h"
#include "slimbert/train/pretrain.h"

namespace slimbert {

enum class WidStrategy { kDim, kHead };  // attention: fewer dims per head, or fewer heads
// How the residual-stream mask M_h is scored: from the layer-0 value row compactor chunked like
// heads (the reference), or from the summed norms of every residual-side compactor, globally.
enum class ResidualScore { kReference, kAll };
// What every mask is scored from: the compactors' row/column norms (the reference), or the norms
// of the compacted weights R W L (and the word embeddings through C_E) that read or write each dim
// — magnitude truncation's criterion applied to the trained compactors. With identity compactors
// the compactor norms are all equal, so the first masks of a short run are picked by optimiser
// noise; the weights carry the teacher's magnitudes from the start (docs/RESULTS.md).
enum class MaskScores { kCompactors, kWeights };

WidStrategy parse_wid_strategy(const std::string& name);      // dim | head
ResidualScore parse_residual_score(const std::string& name);  // reference | all
MaskScores parse_mask_scores(const std::string& name);        // compactors | weights
std::string to_string(WidStrategy s);
std::string to_string(ResidualScore s);
std::string to_string(MaskScores s);

// ---- Targets ----------------------------------------------------------------------------------

// Hidden sizes a strategy can reach from `teacher` (descending): dim removes the same count from
// each head, head removes whole heads.
std::vector<int64_t> valid_target_hiddens(const BertConfig& teacher, WidStrategy strategy);
// The student shape for hidden size `hidden`: FFN scaled in proportion, head size per strategy.
BertConfig student_config(const BertConfig& teacher, int64_t hidden, WidStrategy strategy);
// Parameters of the student's encoder (embeddings + layers; no pooler, no MLM head).
int64_t encoder_parameters(const BertConfig& config);

struct WidTarget {
  int64_t hidden = 0;      // --target-hidden
  int64_t parameters = 0;  // --target-params: the largest valid shape within the budget
  std::string preset;      // wid55 | wid11: BERT-base's 516 / 192 as a fraction of the hidden size
};
// The hidden size a target resolves to; a clear error listing valid values otherwise.
int64_t resolve_target(const BertConfig& teacher, WidStrategy strategy, const WidTarget& target);

// ---- Masks ------------------------------------------------------------------------------------

// Kept-dimension masks (bool, true = kept). One residual mask for everything on the residual
// stream (the alignment strategy), per-layer attention-inner and FFN masks.
struct WidMasks {
  at::Tensor residual;                // (H)
  std::vector<at::Tensor> attention;  // L x (heads * head_size)
  std::vector<at::Tensor> ffn;        // L x (I)
  bool active() const { return residual.defined(); }
  WidMasks to(c10::Device device) const;  // masks live on the model's device
  nlohmann::json to_json() const;         // removed indices per mask
  static WidMasks from_json(const nlohmann::json& j, const BertConfig& teacher,
                            const std::string& source);
};

enum class MaskKind { kResidual, kAttention, kFfn };
struct MaskRef {
  MaskKind kind = MaskKind::kResidual;
  int64_t layer = 0;
};
const at::Tensor& mask_of(const WidMasks& masks, MaskRef ref);

// ---- The compactor model ----------------------------------------------------------------------

struct Compactor {
  std::string name;   // parameter name, e.g. compactors.layer.0.query.in
  at::Tensor weight;  // (d, d)
  bool output_side;   // R and C_E prune rows (outputs); L prunes columns (inputs)
  MaskRef mask;
};

struct MaskedParameter {  // a bias or LayerNorm vector pruned with a mask (§A.6)
  std::string name;
  at::Tensor param;
  MaskRef mask;
};

struct WidModelImpl : torch::nn::Module {
  // Takes the teacher's parameters (registered under their HF names: bert.*, cls.*) and adds
  // identity compactors under compactors.*.
  explicit WidModelImpl(BertForMaskedLM teacher);
  // Last hidden states (B, T, H) through the BERT layer code with the compacted weights;
  // LayerNorms use kept-dim statistics when `masks` is active.
  at::Tensor forward(const Batch& batch, const WidMasks& masks) const;
  // Layer l's tensors: compacted linear maps, the teacher's LayerNorms.
  LayerTensors layer_tensors(int64_t l) const;
  // MLM logits at rows (N, H) of the last hidden states.
  at::Tensor logits(const at::Tensor& rows, const WidMasks& masks) const;
  // FLOPs of forming the compacted weights and the embedding/decoder compactors per micro-batch.
  double compactor_flops(int64_t sequences, int64_t seq_len, int64_t masked) const;

  const BertConfig& config() const { return config_; }
  // A parameter by name (bert.*, cls.*, compactors.*).
  const at::Tensor& param(const std::string& name) const;
  c10::Device device() const { return bert_->device(); }
  // The compacted weight and bias (R W L, R b) of the teacher linear `prefix` (e.g.
  // "bert.encoder.layer.0.attention.self.query").
  std::pair<at::Tensor, at::Tensor> compacted(const std::string& prefix) const;
  // Input-side (L) and output-side (R) compactors of the linear `prefix`.
  const at::Tensor& compactor_in(const std::string& prefix) const;
  const at::Tensor& compactor_out(const std::string& prefix) const;

  std::vector<Compactor> compactors;
  std::vector<MaskedParameter> masked_parameters;

 private:
  BertConfig config_;
  BertModel bert_{nullptr};  // the teacher's encoder (its embeddings)
  std::map<std::string, at::Tensor> params_;
};
TORCH_MODULE(WidModel);

struct WidSchedule {
  WidStrategy strategy = WidStrategy::kDim;
  ResidualScore residual_score = ResidualScore::kReference;  // for compactor scores only
  MaskScores scores = MaskScores::kCompactors;
  int64_t target_hidden = 0;
  int64_t w_step = 100;  // masks recomputed every w_step steps; they grow until the target
  // 0: removed entries only feel the pull (the reference). > 0: after the target they also fall
  // linearly to exactly zero, reached this fraction of the way from the target to the last step,
  // so that the model trained on is the student before the merge (short runs do not finish the
  // pull: docs/RESULTS.md).
  double zero_by = 0;
};

// Masks at mask step `step` (a multiple of w_step), scored from the current compactors or the
// compacted weights (`schedule.scores`).
WidMasks compute_masks(const WidModelImpl& model, const WidSchedule& schedule, int64_t step);
// Mask steps until every mask has its target size (training must run past w_step times this).
int64_t mask_steps_to_target(const BertConfig& teacher, const WidSchedule& schedule);

// The naive-truncation baseline: the target-size masks scored from the teacher's own weight
// magnitudes (no compactor training; MaskScores::kWeights at the target). Merged with identity
// compactors, a truncated teacher.
WidMasks magnitude_masks(const WidModelImpl& model, const WidSchedule& schedule);

struct KeptSizes {
  int64_t hidden = 0, attention = 0, ffn = 0;  // attention/FFN: the smallest layer's
};
KeptSizes kept_sizes(const WidModelImpl& model, const WidMasks& masks);

// ---- Gradient surgery (§A.6) ------------------------------------------------------------------

struct SurgeryOptions {
  double lambda = 20;  // pull on removed entries (the reference's --l2_lambda)
  double warm_l2 = 1;  // plain L2 on every compactor entry until masks exist
  double beta1 = 0.9;  // the optimizer's, for the first-moment injection
};
// A compactor's removed entries: its removed rows (output side) or columns, broadcast to (d, d).
at::Tensor removed_entries(const Compactor& compactor, const WidMasks& masks);
// Calls f(name, parameter, removed) for every tensor the masks prune: compactors (`removed`
// broadcasts over their rows or columns) and masked biases/LayerNorms.
void for_each_removed(
    const WidModelImpl& model, const WidMasks& masks,
    const std::function<void(const std::string&, const at::Tensor&, const at::Tensor&)>& f);
// With schedule.zero_by > 0, after optimizer step `step` of `total` (the target reached at
// `target_step`): scales every removed entry so that it falls linearly from its value at the
// target to zero at target + zero_by (total - target), and keeps it at zero after.
void shrink_removed(WidModelImpl& model, const WidMasks& masks, const WidSchedule& schedule,
                    int64_t step, int64_t target_step, int64_t total);
// The largest |entry| the masks remove (compactors, masked biases/LayerNorms): how far the pull
// towards zero still has to go.
double largest_removed_entry(const WidModelImpl& model, const WidMasks& masks);

// Edits gradients (and, for lambda > 1, the optimizer's first moments) of compactors and
// masked biases/LayerNorms. `exp_avg` returns the first moment of a named parameter.
// Before pruning starts (`pruning` false) only the plain L2 on compactors applies.
void apply_gradient_surgery(WidModelImpl& model, const WidMasks& masks, bool pruning,
                            const SurgeryOptions& options,
                            const std::function<at::Tensor&(const std::string&)>& exp_avg);

// ---- Merge (§A.9) -----------------------------------------------------------------------------

// Multiplies the kept parts of the compactors into the weights: a dense BertForMaskedLM with
// hidden |M_h|. In dim mode the query is scaled by sqrt(d'/d) so that the standard 1/sqrt(d')
// attention scale computes the trained 1/sqrt(d).
std::pair<BertConfig, BertForMaskedLM> merge_student(const WidModelImpl& model,
                                                     const WidMasks& masks, WidStrategy strategy);
// Zeroes the removed compactor rows/columns in place: then the compactor model computes exactly
// what the merged student does (the reference's merge assumes they are ~0 already). Masked biases
// stay: the merge keeps what they add through the kept rows of the compactor after them.
void zero_removed(WidModelImpl& model, const WidMasks& masks);

// ---- Training (slimbert wid) ------------------------------------------------------------------

struct WidOptions {
  PretrainOptions train;  // init_dir = the teacher; steps, batch, lr (base weights), ...
  WidSchedule schedule;
  WidTarget target;
  SurgeryOptions surgery;
  double compactor_lr = 1e-4;
};

struct WidResult {
  PretrainResult train;     // its validation is the compactor model's at the last step
  std::string student_dir;  // OUT/student when finished
  BertConfig student;
  MlmValidation student_validation;  // the merged student's, on the same validation batches
};

// Defaults for short runs (thousands of steps), measured in docs/RESULTS.md.
WidOptions short_run_wid_options();
WidResult wid_train(WidOptions options);
// Merges the compactor checkpoint `checkpoint_dir` (a WID checkpoint) into a student at `out`.
BertConfig wid_merge(const std::string& checkpoint_dir, const std::string& out, bool float16);
// The naive-truncation baseline: the teacher cut to the target by weight magnitude, at `out`.
BertConfig wid_truncate(const std::string& teacher_dir, WidStrategy strategy,
                        const WidTarget& target, const std::string& out);

}  // namespace slimbert
