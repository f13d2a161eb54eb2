// BERT on libtorch, registered under HuggingFace parameter names so that loading and saving
// are name lookups ("bert.encoder.layer.3.attention.self.query.weight").
//
// Shapes are per layer (pruned heads, a head size independent of the hidden size), and every
// forward takes a SubNet so that a DynaBERT (width, depth) sub-network runs by slicing the
// stored weights as views, without copies.
#pragma once

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "slimbert/model/config.h"

namespace slimbert {

struct Encoding;  // text/tokenizer.h

// A sub-network choice (ALGORITHMS.md §B.2-B.3). The full model is SubNet{}.
struct SubNet {
  double width = 1.0;  // fraction of attention heads (and, in proportion, FFN neurons) kept
  double depth = 1.0;  // fraction of layers kept
  bool full() const { return width == 1.0 && depth == 1.0; }
};
// "w0.5_d0.75": how directories, reports, profiles and the server name a sub-network.
std::string subnet_name(const SubNet& subnet);
// The same multipliers up to rounding of their decimal text (1e-9).
bool same_subnet(const SubNet& a, const SubNet& b);

// Layers kept at depth multiplier `depth`: d = round(depth * L), indices floor(i / depth).
std::vector<int64_t> kept_layers(int64_t num_layers, double depth);
// Heads kept at width multiplier `width`: round(width * heads) (half to even), at least 1.
int64_t kept_heads(int64_t heads, double width);

struct LayerShape {
  int64_t heads = 0;      // attention heads used
  int64_t head_size = 0;  // per head
  int64_t ffn = 0;        // FFN neurons used
};
// The slice of layer `layer` used at width `width` (full shape at width 1).
LayerShape layer_shape(const BertConfig& config, int64_t layer, double width);

// Model inputs, all (B, T) int64. token_type_ids and attention_mask may be undefined
// (zeros / all ones).
struct Batch {
  at::Tensor input_ids;
  at::Tensor token_type_ids;
  at::Tensor attention_mask;
  // The positions pooling averages over, where they differ from attention_mask (prompts that
  // sentence-transformers' include_prompt false leaves out); undefined otherwise.
  at::Tensor pool_mask{};

  // The same batch on `device` (no copy when it is already there; undefined tensors stay so).
  Batch to(c10::Device device) const;
};

struct Encoded {
  std::vector<at::Tensor> hidden_states;  // [0] = embedding output, [i] = layer i: (B, T, H)
  at::Tensor pooled;                      // (B, H); undefined without a pooler
  const at::Tensor& last() const { return hidden_states.back(); }
};

// ---- Building blocks: plain parameters named weight / bias, as in HF -------------------------

struct LinearImpl : torch::nn::Module {
  LinearImpl(int64_t in, int64_t out, bool with_bias = true);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;  // (out, in)
  at::Tensor bias;    // (out)
};
TORCH_MODULE(Linear);

struct LayerNormImpl : torch::nn::Module {
  LayerNormImpl(int64_t size, double eps);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  double eps;
};
TORCH_MODULE(LayerNorm);

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t count, int64_t dim);
  at::Tensor forward(const at::Tensor& ids) const;
  at::Tensor weight;  // (count, dim)
};
TORCH_MODULE(Embedding);

// ---- BERT ------------------------------------------------------------------------------------

struct BertEmbeddingsImpl : torch::nn::Module {
  explicit BertEmbeddingsImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& input_ids,
                     const at::Tensor& token_type_ids) const;  // (B, T, H)
  // Word + position + token type embeddings, before the LayerNorm (token_type_ids may be
  // undefined: type 0). Checks the ids against the tables.
  at::Tensor sum(const at::Tensor& input_ids, const at::Tensor& token_type_ids) const;
  Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  LayerNorm layer_norm{nullptr};  // registered as "LayerNorm"
  double dropout;
  std::optional<int64_t> padding_idx;  // RoBERTa's position rule (model/family.h)
};

// The position embedding rows of `input_ids` (B, T): rows 0..T-1 as (T, H) for BERT; with a
// padding_idx (RoBERTa), padding_idx + 1 + the count of non-padding tokens so far, and
// padding_idx on padding, as (B, T, H). Fails past the table.
at::Tensor position_rows(const at::Tensor& table, const at::Tensor& input_ids,
                         std::optional<int64_t> padding_idx);
TORCH_MODULE(BertEmbeddings);

struct BertLayerImpl;
struct BertEncoderImpl : torch::nn::Module {
  explicit BertEncoderImpl(const BertConfig& config);
  std::vector<std::shared_ptr<BertLayerImpl>> layers;  // registered as layer.0, layer.1, ...
};
TORCH_MODULE(BertEncoder);

struct BertPoolerImpl : torch::nn::Module {
  explicit BertPoolerImpl(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;  // tanh(dense(hidden[:, 0])): (B, H)
  Linear dense{nullptr};
};
TORCH_MODULE(BertPooler);

struct BertModelImpl : torch::nn::Module {
  BertModelImpl(const BertConfig& config, bool add_pooling_layer = true);
  // head_mask: (layers, heads) multipliers of the attention probabilities, or undefined (none);
  // DynaBERT's head importance is the gradient of the loss with respect to it.
  Encoded forward(const Batch& batch, const SubNet& subnet = {},
                  const at::Tensor& head_mask = {}) const;
  const BertConfig& config() const { return config_; }
  c10::Device device() const { return embeddings->word_embeddings->weight.device(); }
  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  BertPooler pooler{nullptr};  // null without a pooling layer

 private:
  BertConfig config_;
};
TORCH_MODULE(BertModel);

// cls.predictions: transform (dense, act, LayerNorm), then the decoder tied to the word
// embeddings, plus its own bias.
struct BertMlmHeadImpl : torch::nn::Module {
  explicit BertMlmHeadImpl(const BertConfig& config);
  // hidden: (..., H) -> logits (..., V)
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& word_embeddings) const;
  std::shared_ptr<torch::nn::Module> transform;
  Linear dense{nullptr};
  LayerNorm layer_norm{nullptr};
  at::Tensor bias;  // (V)
  std::string act;
};
TORCH_MODULE(BertMlmHead);

struct BertForMaskedLMImpl : torch::nn::Module {
  explicit BertForMaskedLMImpl(const BertConfig& config);
  at::Tensor forward(const Batch& batch, const SubNet& subnet = {}) const;  // (B, T, V)
  // Logits only at the given hidden rows: hidden (N, H) -> (N, V). The vocabulary projection
  // dominates small models, so training computes it at masked positions only.
  at::Tensor logits(const at::Tensor& hidden) const;
  BertModel bert{nullptr};
  BertMlmHead predictions{nullptr};  // registered as cls.predictions
};
TORCH_MODULE(BertForMaskedLM);

struct BertForSequenceClassificationImpl : torch::nn::Module {
  explicit BertForSequenceClassificationImpl(const BertConfig& config);
  at::Tensor forward(const Batch& batch, const SubNet& subnet = {},
                     const at::Tensor& head_mask = {}) const;  // (B, num_labels)
  at::Tensor logits(const Encoded& encoded) const;
  BertModel bert{nullptr};
  Linear classifier{nullptr};
  double dropout;
};
TORCH_MODULE(BertForSequenceClassification);

// Additive attention bias (B, 1, T) from the batch's padding mask (float32 min on padding), or
// undefined when nothing is padded. Checks the batch's tensor shapes.
at::Tensor attention_bias(const Batch& batch);
// Multi-head attention from packed projections qkv (B, T, 3 * heads * head_size) laid out
// [Q | K | V]; `head_bias` is attention_bias repeated per head (B * heads, 1, T) or undefined.
// `head_scale` (heads), when defined, multiplies each head's attention probabilities (HF's
// head_mask; DynaBERT's head importance is the gradient with respect to it).
// Returns the context (B, T, heads * head_size).
at::Tensor multi_head_attention(const at::Tensor& qkv, const at::Tensor& head_bias, int64_t heads,
                                int64_t head_size, double dropout, bool train,
                                const at::Tensor& head_scale = {});

// Activation by HF name (gelu = exact erf GELU).
at::Tensor activation(const at::Tensor& x, const std::string& name);

// Which hidden dims a LayerNorm takes its statistics over. WID's alignment strategy keeps every
// dim in the forward while the residual mask grows, but normalises over the kept ones only, so
// that the model trained on is the student the merge makes.
struct NormMask {
  at::Tensor weights;  // (H) 1 kept, 0 removed; undefined = every dim (HF's LayerNorm)
  double count = 0;    // dims kept
};
NormMask norm_mask(const at::Tensor& kept);  // kept: (H) bool, or undefined
// HF's LayerNorm with mean and biased variance over the dims `mask` keeps, applied to every dim.
at::Tensor masked_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             double eps, const NormMask& mask = {});

// One encoder layer's tensors as its forward uses them: the stored parameters sliced to a
// sub-network, or WID's compacted products (R W L, R b).
struct LayerTensors {
  at::Tensor qkv_weight, qkv_bias;  // [Q | K | V] rows, heads * head_size each
  at::Tensor attention_output_weight, attention_output_bias;
  at::Tensor attention_norm_weight, attention_norm_bias;
  at::Tensor intermediate_weight, intermediate_bias;
  at::Tensor output_weight, output_bias;
  at::Tensor output_norm_weight, output_norm_bias;
};
struct LayerOptions {
  int64_t heads = 0, head_size = 0;
  std::string act = "gelu";
  double hidden_dropout = 0, attention_dropout = 0, eps = 1e-12;
  bool train = false;
  at::Tensor head_scale;  // (heads) attention probability multipliers, or undefined
  NormMask norm;          // both LayerNorms'
};
LayerOptions layer_options(const BertConfig& config, const LayerShape& shape, bool train);
// The BERT layer: self-attention, projection, residual and LayerNorm, then the FFN, residual and
// LayerNorm. x: (B, T, H); head_bias: attention_bias repeated per head, or undefined.
at::Tensor bert_layer(const at::Tensor& x, const LayerTensors& t, const at::Tensor& head_bias,
                      const LayerOptions& options);

// HF-style random initialisation: N(0, initializer_range) weights and embeddings, zero
// biases, unit LayerNorm, zero padding-token embedding row.
void init_weights(torch::nn::Module& module, const BertConfig& config, uint64_t seed);

}  // namespace slimbert
