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

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"

namespace slimbert::infer {

// Where fp32 products run: libtorch's BLAS (OpenBLAS here), or oneDNN with weights packed at load.
enum class Gemm { kBlas, kOnednn };
Gemm parse_gemm(const std::string& name);  // "openblas" | "onednn"

struct ModelOptions {
  bool int8 = false;
  // Width multipliers to pack weights for (int8 and oneDNN; OpenBLAS fp32 runs any width).
  std::vector<double> widths = {1.0};
  Gemm gemm = Gemm::kBlas;
};

// What a forward pass returns. `logits` is defined for a classification checkpoint.
struct Output {
  at::Tensor last;    // (B, T, H) last hidden layer
  at::Tensor pooled;  // (B, H), undefined without a pooler
  at::Tensor logits;  // (B, labels), undefined without a classifier
};

class PackedLinear;  // an int8 linear map (model.cpp)

class InferenceModel {
 public:
  // DIR: a slimbert or HF checkpoint directory (config.json + model.safetensors or shards).
  static std::shared_ptr<const InferenceModel> load(const std::string& dir,
                                                    const ModelOptions& options = {});
  ~InferenceModel();

  Output forward(const Batch& batch, const SubNet& subnet = {}) const;

  const BertConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  bool int8() const { return options_.int8; }
  Gemm gemm() const { return options_.gemm; }
  c10::Device device() const;
  bool has_classifier() const { return classifier_w_.defined(); }
  bool has_pooler() const { return pooler_w_.defined(); }
  // Bytes of the weights as held (int8 packs counted at one byte a weight).
  int64_t weight_bytes() const;
  // True when `subnet` can run: int8 models run only the widths packed at load.
  bool supports(const SubNet& subnet) const;

 private:
  InferenceModel();
  struct Layer;
  // Weights packed per width at load (int8, or fp32 for oneDNN).
  bool packs() const { return options_.int8 || options_.gemm == Gemm::kOnednn; }
  at::Tensor layer_forward(const Layer& layer, const at::Tensor& x, const at::Tensor& mask_bias,
                           const LayerShape& shape) const;

  std::string dir_;
  BertConfig config_;
  ModelOptions options_;
  at::Tensor word_, position_, token_type_, emb_ln_w_, emb_ln_b_;
  std::vector<Layer> layers_;
  at::Tensor pooler_w_, pooler_b_, classifier_w_, classifier_b_;
};

// Chooses libtorch's quantized engine (oneDNN where the build has it); false when none fits.
bool select_int8_engine();

}  // namespace slimbert::infer
