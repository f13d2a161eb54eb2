// The inference model: a BERT checkpoint loaded once, its weights arranged for serving, and a
// forward that is const (no autograd, no state of its own changed by a call). The server runs
// it on one model thread; calls from several threads at once are not tested (the int8 and
// oneDNN maps' libraries keep caches of their own).
//
// Each layer's Q, K and V projections are fused into one matrix whose rows are grouped by head
// ([q0 k0 v0 | q1 k1 v1 | ...]), so the first k heads of a DynaBERT sub-network are one
// contiguous slice: any (width, depth) runs per call as views of the loaded weights.
//
// With int8 (or oneDNN fp32), the encoder's linear maps run through libtorch's dynamically
// quantized linear (per-output-channel int8 weights, activations quantized per call) on the oneDNN
// engine. The packed weights depend on the slice, so they are packed at load for each width asked
// for.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <algorithm>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slimbert/core/runtime.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"

namespace slimbert::infer {

// Where fp32 products run: libtorch's BLAS (OpenBLAS here), or oneDNN with weights packed at load;
// kAuto is resolved by measurement (configure_engine) before a model is loaded.
enum class Gemm { kAuto, kBlas, kOnednn };
Gemm parse_gemm(const std::string& name);  // "auto" | "openblas" | "onednn"
const char* gemm_name(Gemm gemm);

// Both fp32 engines timed on one encoder layer of a model's shape (random weights), whole passes
// at a few batch shapes from one short sequence to a batch of long ones, each engine under the
// thread setting it runs with: the products, and the attention and elementwise work whose threads
// differ between the two settings.
struct GemmTiming {
  double blas_ms = 0, onednn_ms = 0;  // p50 summed over the shapes
  double onednn_speedup = 0;          // geometric mean over the shapes of blas / onednn
};

struct ModelOptions {
  bool int8 = false;
  // Width multipliers to pack weights for (int8 and oneDNN; OpenBLAS fp32 runs any width).
  std::vector<double> widths = {1.0};
  Gemm gemm = Gemm::kBlas;
  std::optional<GemmTiming> measured = std::nullopt;  // why kAuto chose `gemm`, when it did
};

// int8 and oneDNN pack the encoder's weights at load, per width, for their own kernels.
bool packs_weights(const ModelOptions& options);
// The thread setting a model loaded with `options` runs best under: int8 and oneDNN products run
// on libtorch's intra-op pool, OpenBLAS products on OpenBLAS's threads.
RuntimeConfig runtime_for(const ModelOptions& options, RuntimeConfig runtime);

// Resolves Gemm::kAuto to the engine measured faster here for `config`'s shapes (fp32 on a CPU:
// oneDNN when onednn_speedup > 1; OpenBLAS elsewhere, and where oneDNN is missing), then applies
// runtime_for(options, runtime). Returns the options to load the model with.
ModelOptions configure_engine(const BertConfig& config, ModelOptions options,
                              const RuntimeConfig& runtime);
GemmTiming measure_gemm(const BertConfig& config, const RuntimeConfig& runtime);

// The machine's measured matrix-product rate per engine (GFLOP/s, 2 m n k per product): the
// best of several square products of `size` under each engine's thread setting. The physical
// limit benchmarks report their achieved rates against. 0 where an engine is missing.
struct GemmPeak {
  double openblas_fp32 = 0, onednn_fp32 = 0, int8 = 0;
  double fp32() const { return std::max(openblas_fp32, onednn_fp32); }
};
GemmPeak measure_gemm_peak(const RuntimeConfig& runtime, int64_t size = 1024, int repeats = 8);

class InferenceModel;
// configure_engine for DIR's config.json, then InferenceModel::load with the options it returns.
// Warns on stderr when widths below 1 are asked of a model that was never rewired (its first
// heads are not its most important).
std::shared_ptr<const InferenceModel> load_configured(const std::string& dir,
                                                      const ModelOptions& request,
                                                      const RuntimeConfig& runtime);

// What a forward pass returns. `logits` is defined for a classification checkpoint.
struct Output {
  at::Tensor last;    // (B, T, H) last hidden layer
  at::Tensor pooled;  // (B, H), undefined without a pooler
  at::Tensor logits;  // (B, labels), undefined without a classifier
};

// A linear map whose weights were laid out once for a library's own kernels.
class PackedLinear {
 public:
  virtual ~PackedLinear() = default;
  virtual at::Tensor operator()(const at::Tensor& x) const = 0;  // (..., in) -> (..., out)
  virtual int64_t bytes() const = 0;
};
// `weight` (out, in) and `bias` packed for the engine of `options` (int8, or fp32 through
// oneDNN), as the model packs its encoder's maps.
std::shared_ptr<const PackedLinear> pack_linear(const at::Tensor& weight, const at::Tensor& bias,
                                                const ModelOptions& options);

// Activations quantized per call for an int8 product: u8 levels 0..max_level over the tensor's
// range (zero included, so that it is exact), x ~ scale (q - zero_point).
struct ActivationQuantization {
  at::Tensor values;  // uint8, the input's shape: round(x / scale) + zero_point
  double scale = 1;
  int64_t zero_point = 0;
};
ActivationQuantization quantize_activations(const at::Tensor& x, int64_t max_level = 255);

class InferenceModel {
 public:
  // DIR: a slimbert or HF checkpoint directory (config.json + model.safetensors or shards).
  static std::shared_ptr<const InferenceModel> load(const std::string& dir,
                                                    const ModelOptions& options = {});
  // From weights in memory under HF names (a base model's, or a head model's with "bert.").
  static std::shared_ptr<const InferenceModel> from_weights(const BertConfig& config,
                                                            TensorMap tensors,
                                                            const ModelOptions& options = {});
  ~InferenceModel();

  Output forward(const Batch& batch, const SubNet& subnet = {}) const;

  const BertConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  bool int8() const { return options_.int8; }
  Gemm gemm() const { return options_.gemm; }
  const ModelOptions& options() const { return options_; }
  const char* engine_name() const;  // "int8", "openblas" or "onednn"
  c10::Device device() const;
  bool has_classifier() const { return classifier_w_.defined(); }
  bool has_pooler() const { return pooler_w_.defined(); }
  // The masked-LM head (cls.predictions.*, decoder tied to the word embeddings) was loaded.
  bool has_mlm() const { return mlm_w_.defined(); }
  // Vocabulary logits (B, T, V) of the last hidden layer (B, T, H); needs has_mlm().
  at::Tensor mlm_logits(const at::Tensor& last) const;
  // Bytes of the weights as held (int8 packs counted at one byte a weight).
  int64_t weight_bytes() const;
  // True when `subnet` can run: int8 models run only the widths packed at load.
  bool supports(const SubNet& subnet) const;

 private:
  InferenceModel();
  static std::shared_ptr<const InferenceModel> build(const std::string& dir,
                                                     const BertConfig& config, TensorMap tensors,
                                                     const std::string& source,
                                                     const ModelOptions& options);
  struct Layer;
  // Weights packed per width at load (int8, or fp32 for oneDNN).
  bool packs() const { return packs_weights(options_); }
  at::Tensor layer_forward(const Layer& layer, const at::Tensor& x, const at::Tensor& mask_bias,
                           const LayerShape& shape) const;

  std::string dir_;
  BertConfig config_;
  ModelOptions options_;
  at::Tensor word_, position_, token_type_, emb_ln_w_, emb_ln_b_;
  std::optional<int64_t> padding_idx_;  // RoBERTa's position rule (model/family.h)
  std::vector<Layer> layers_;
  at::Tensor pooler_w_, pooler_b_, classifier_w_, classifier_b_;
  at::Tensor mlm_w_, mlm_b_, mlm_ln_w_, mlm_ln_b_, mlm_bias_;
};

// Chooses libtorch's quantized engine (oneDNN where the build has it); false when none fits.
bool select_int8_engine();

}  // namespace slimbert::infer
