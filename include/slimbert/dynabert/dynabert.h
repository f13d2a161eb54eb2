// DynaBERT (ALGORITHMS.md Part B): one task model that runs at any (width, depth).
//
// Rewiring sorts each layer's heads and FFN neurons by importance so that width w keeps the
// first round(w * heads) heads and the matching share of neurons (the model's SubNet slicing);
// static export turns any sub-network into an ordinary HF checkpoint.
#pragma once

#include <ATen/Tensor.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "slimbert/infer/model.h"
#include "slimbert/infer/onnx.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/train/finetune.h"

namespace slimbert {

// ---- Embedding models ---------------------------------------------------------------------------
//
// A model without a classifier is compressed as the sentence encoder it is: its sentence vectors
// (the model's own pooling and normalisation, from its sentence-transformers modules) take the
// place of logits. Importance comes from sentence-transformers' CosineSimilarityLoss on a
// labelled pair file (the cosine of each pair's vectors against its label scaled to [0, 1]);
// the distillation stages match each sub-network's vectors to the teacher's (MSE, with the
// hidden states as for a classifier); sub-networks are scored by Spearman's rho of the pair
// cosines against the labels.

// How a sentence vector is made from the last hidden layer.
struct SentenceHead {
  infer::Pooling pooling = infer::Pooling::kCls;
  bool normalize = false;
};
// DIR's sentence-transformers modules (the first token, unnormalised, when it has none).
SentenceHead sentence_head_of(const std::string& model_dir);
// True when DIR's weights hold a sequence classifier.
bool has_classifier_weights(const std::string& model_dir);

// Sentence vectors (B, H) of an encoder's output on `batch`; differentiable.
at::Tensor sentence_vectors(const Encoded& encoded, const Batch& batch, const SentenceHead& head);

// A labelled pair split with each text encoded on its own, as an embedding model reads it. The
// gold value of a pair is the number its label states, else its class index.
struct EncodedPairs {
  std::string source;
  std::vector<Encoding> a, b;
  std::vector<double> gold;  // empty when `need_labels` is false
};
// `limit`: tokens per text (longer texts are truncated), as infer::max_input_length gives it.
EncodedPairs encode_pairs(const Tokenizer& tokenizer, const TaskSpec& spec, const TaskData& data,
                          int64_t limit, bool need_labels);

// Spearman's rho of the cosine of each pair's vectors (a training model at `subnet`, eval mode,
// no gradients) against the gold values.
double pair_spearman(BertModel& model, const EncodedPairs& pairs, const SubNet& subnet,
                     const SentenceHead& head, int64_t pad_id, int64_t batch_size = 64);

// ---- Static export (§B.10) --------------------------------------------------------------------

// How dropped heads are stored. kPruned: removed, listed in pruned_heads (HF's form for pruned
// models; smallest, loads in slimbert and transformers 4.x, which applies pruned_heads).
// kZeroed: kept at full size with zero query/key/value rows and output columns, so the head adds
// nothing; a plain config that transformers 5 (which dropped pruned_heads) loads too.
enum class DroppedHeads { kPruned, kZeroed };

// The weights of `subnet` as a standalone model: kept layers re-indexed, the first heads and FFN
// neurons; embeddings, LayerNorms, pooler and heads unchanged. Accepts base-model or head-model
// tensor names.
std::pair<BertConfig, TensorMap> extract_subnet(const BertConfig& config, const TensorMap& weights,
                                                const SubNet& subnet,
                                                DroppedHeads heads = DroppedHeads::kPruned);
// Reads checkpoint `model_dir` and writes the static sub-network to `out` (atomically).
BertConfig export_subnet(const std::string& model_dir, const SubNet& subnet, const std::string& out,
                         DroppedHeads heads = DroppedHeads::kPruned);

// Reads checkpoint `model_dir` and writes the static sub-network as an ONNX model at `out`.
void export_onnx(const std::string& model_dir, const SubNet& subnet, const OnnxOptions& options,
                 const std::string& out);

// ---- Importance and rewiring (§B.4) -----------------------------------------------------------

struct Importance {
  at::Tensor heads;    // (layers, heads): sum over batches of |dL / d head_mask|
  at::Tensor neurons;  // (layers, intermediate): first-order Taylor scores
};

struct ImportanceOptions {
  // The reference never zeroes gradients between batches, so each batch adds the absolute value
  // of the cumulative gradient; false scores each batch's own gradient.
  bool cumulative_gradients = true;
};

// Scores heads and FFN neurons of `model` (eval mode, no dropout) with the task loss over
// `batches` of `data`'s rows (`order` in batches of `batch_size`).
Importance compute_importance(BertForSequenceClassification& model, const EncodedTask& data,
                              bool regression, int64_t batch_size, int64_t pad_id,
                              const ImportanceOptions& options = {});
// The same for an embedding model, with CosineSimilarityLoss on the pairs (labels scaled to
// [0, 1] by their smallest and largest value).
Importance compute_importance(BertModel& model, const EncodedPairs& pairs, const SentenceHead& head,
                              int64_t batch_size, int64_t pad_id,
                              const ImportanceOptions& options = {});

// Permutes every layer's heads (Q/K/V rows, attention-output columns) and FFN neurons
// (intermediate rows, output columns) into descending importance. The full model's function is
// unchanged; prefixes of the new order are the most important heads and neurons.
void rewire(BertModel& model, const Importance& importance);

struct RewireOptions {
  std::string model_dir;  // the fine-tuned task model
  std::string task, data_dir;
  std::string out_dir;          // the rewired model and importance.json
  std::string split = "train";  // examples scored: train (a seeded subset) or dev
  int64_t examples = 2000;      // 0 = the whole split
  int64_t batch_size = 32, max_length = 128;
  uint64_t seed = 0;  // subset seed
  ImportanceOptions importance;
  bool skip_bad_rows = false;
};
struct RewireResult {
  std::string source;  // the split's file
  int64_t examples = 0;
  Importance importance;
};
// Scores `model_dir` on the task, rewires it and writes it with importance.json to `out_dir`.
RewireResult rewire_model(const RewireOptions& options);

// The orders rewire applies: per layer, head and neuron indices by descending importance
// (stable: ties keep their index order).
std::vector<at::Tensor> head_order(const Importance& importance);
std::vector<at::Tensor> neuron_order(const Importance& importance);

// ---- Distillation stages (§B.5-B.7) ----------------------------------------------------------

enum class DynaStage {
  kWidth,       // stage 1, DynaBERT_W: all widths at full depth, KD from the fine-tuned teacher
  kWidthDepth,  // stage 2, DynaBERT: every (width, depth), KD from DynaBERT_W
  kFinetune,    // stage 3: every (width, depth) on the gold labels
};
std::string to_string(DynaStage stage);

struct DynaTrainOptions {
  FinetuneOptions train;    // model_dir = the student's start; task, data, out, epochs, lr, ...
  std::string teacher_dir;  // the fixed teacher (stages 1 and 2)
  DynaStage stage = DynaStage::kWidth;
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};
  std::vector<double> depths = {1.0, 0.75, 0.5};  // stage 1 uses depth 1 only
  double lambda1 = 1.0;  // logit loss (soft cross-entropy; MSE for regression)
  double lambda2 = 0.1;  // hidden-state + embedding MSE (stage 2: 1.0)
  // Stage 2 teacher: full width (the reference code) or the student's width (the paper).
  bool same_width_teacher = false;

  // The options a resume compares: the task loop's and the stage's own.
  void sign(RunSignature& run) const {
    train.sign(run);
    run.add("widths", widths, OnResume::kDefining);
    run.add("depths", depths, OnResume::kDefining);
    run.add("lambda1", lambda1, OnResume::kAdjustable);
    run.add("lambda2", lambda2, OnResume::kAdjustable);
    run.add("same_width_teacher", same_width_teacher, OnResume::kAdjustable);
  }
};

// A stage's defaults: the reference's lr 2e-5 without warmup or weight decay, lambda2 0.1 in
// stage 1 and 1.0 after.
DynaTrainOptions stage_defaults(DynaStage stage);

// Teacher hidden-state index matched to each student hidden state at depth `depth` (§B.6):
// kept_layers(depth) followed by num_layers (the final output).
std::vector<int64_t> distillation_targets(int64_t num_layers, double depth);

// Runs a stage on the shared task loop; best/ is selected by the summed dev metric over all
// sub-networks, which progress lines and metrics.jsonl list one by one.
FinetuneResult dynabert_train(const DynaTrainOptions& options);

// "w0.75_d0.5": how reports name a sub-network.

// ---- Data augmentation (§B.8) ------------------------------------------------------------------

struct AugmentOptions {
  std::string mlm_dir;  // a pretrained masked LM; its tokenizer splits the words
  std::string task, data_dir;
  std::string out_dir;        // a JSONL task directory: train (originals + rewrites), dev, test
  int64_t candidates = 15;    // M: MLM candidates per word
  int64_t per_example = 20;   // N: rewrites attempted per example (duplicates are dropped)
  double replace_prob = 0.4;  // p: chance each candidate word is replaced in a rewrite
  int64_t max_length = 128;   // MLM input: masked window + the same window unmasked
  int64_t batch_size = 64;    // masked inputs per forward
  int64_t max_examples = 0;   // augment the subset --max-train-examples picks (0 = all)
  uint64_t subset_seed = 0;   // ... with this --seed
  uint64_t seed = 0;          // rewrite sampling
  bool skip_bad_rows = false;
};

struct AugmentResult {
  int64_t originals = 0, rewrites = 0;
  int64_t words = 0, candidate_words = 0;  // words seen / words with MLM candidates
};

// TinyBERT-style candidates for each word of `words` (the tokenizer's split of one text): those
// of the top-M predictions of the masked LM at the word's position that are content words
// (letters only, not a stop word), for single-piece content words; empty for every other word,
// which rewrites keep as it is (TinyBERT takes GloVe neighbours for multi-piece words; GloVe is not
// available offline). The MLM reads [CLS] masked window [SEP] same window [SEP], the window (at
// most (max_length - 3) / 2 pieces) centred on the word. `mlm` must be in eval mode.
std::vector<std::vector<std::string>> word_candidates(const BertForMaskedLM& mlm,
                                                      const Tokenizer& tokenizer,
                                                      const std::vector<Word>& words,
                                                      int64_t candidates, int64_t max_length,
                                                      int64_t batch_size);

// Up to `attempts` distinct rewrites of `words` (joined by spaces), none equal to the original:
// in each attempt every word with candidates is replaced, with probability p, by a uniformly
// drawn candidate.
std::vector<std::string> rewrite_text(const std::vector<Word>& words,
                                      const std::vector<std::vector<std::string>>& candidates,
                                      int64_t attempts, double p, std::mt19937_64& rng);

// Writes the augmented task: the training examples (or the seeded subset) followed by their
// rewrites, each with its source's label (KD stages replace labels with the teacher's logits);
// for pairs only the first text is rewritten. dev and test are copied. Progress on stderr.
AugmentResult augment_task(const AugmentOptions& options);

// ---- Grid report ------------------------------------------------------------------------------

struct GridOptions {
  std::string task, data_dir;
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};
  std::vector<double> depths = {1.0, 0.75, 0.5};
  std::vector<std::string> splits = {"dev", "test"};  // unlabelled splits are skipped
  int64_t max_length = 128;
  std::vector<int64_t> latency_batches = {1, 8};
  int64_t latency_seq = 128, latency_iters = 10;
  bool int8 = false;  // score and time the int8 runtime (weights packed for `widths`)
  // Where fp32 products run (resolved: infer::configure_engine turns kAuto into an engine and
  // sets the threads for it).
  infer::Gemm gemm = infer::Gemm::kBlas;
  bool skip_bad_rows = false;
};

struct GridPoint {
  SubNet subnet;
  int64_t layers = 0, heads = 0, ffn = 0;
  int64_t parameters = 0;  // of the exported sub-network (encoder, pooler, classifier)
  double gflops = 0;       // encoder forward, one sequence of latency_seq tokens
  std::map<std::string, double> scores;      // split -> main metric
  std::map<std::string, double> metrics;     // "<split>_<metric>" -> value
  std::map<int64_t, double> latency_p50_ms;  // batch -> p50 at latency_seq tokens
};

// Scores every (width, depth) of the task model at `model_dir` and measures it.
// `series` names the model on the progress lines (stderr).
std::vector<GridPoint> evaluate_grid(const std::string& model_dir, const GridOptions& options,
                                     const std::string& series = "");
// Baseline series of separately trained static models, one per grid point: scores
// `dir`/<subnet_name>/best (or `dir`/<subnet_name>) at its full size, labelled with that point.
// Points without a model are left out.
std::vector<GridPoint> evaluate_separate(const std::string& dir, const GridOptions& options,
                                         const std::string& series = "");
// The models evaluate_separate scores, with their grid points; fails when there is none.
std::vector<std::pair<SubNet, std::string>> find_separate_models(const std::string& dir,
                                                                 const GridOptions& options);

struct GridSeries {
  std::string name;  // e.g. "DynaBERT", "rewired only"
  std::vector<GridPoint> points;
};
// grid.json, grid.md (one table per series) and grid.html (the tables and two SVG Pareto plots:
// score vs batch-1 latency and score vs parameters) in `out_dir`; returns the HTML path.
std::string write_grid_report(const std::vector<GridSeries>& series, const std::string& task,
                              const std::string& out_dir);

}  // namespace slimbert
