#include "slimbert/model/bert.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "slimbert/core/error.h"
#include "slimbert/model/family.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert {

// ---- Sub-network rules -----------------------------------------------------------------------

std::vector<int64_t> kept_layers(int64_t num_layers, double depth) {
  if (!(depth > 0.0 && depth <= 1.0)) fail("depth multiplier must be in (0, 1], got ", depth);
  // Python round(): half to even, as the reference uses.
  const int64_t d = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(depth * num_layers)));
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < d; ++i)
    kept.push_back(
        std::min<int64_t>(num_layers - 1, static_cast<int64_t>(std::floor(i / depth + 1e-9))));
  return kept;
}

int64_t kept_heads(int64_t heads, double width) {
  if (!(width > 0.0 && width <= 1.0)) fail("width multiplier must be in (0, 1], got ", width);
  return std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(width * heads)));
}

LayerShape layer_shape(const BertConfig& config, int64_t layer, double width) {
  const int64_t heads = config.heads_in_layer(layer);
  LayerShape s{heads, config.attention_head_size(), config.intermediate_size};
  if (width == 1.0 || heads == 0) return s;
  s.heads = kept_heads(heads, width);
  // The effective multiplier is heads kept / heads; FFN neurons follow it.
  s.ffn = std::max<int64_t>(1, s.heads * config.intermediate_size / heads);
  return s;
}

std::string subnet_name(const SubNet& s) {
  std::ostringstream out;
  out << "w" << s.width << "_d" << s.depth;
  return out.str();
}

bool same_subnet(const SubNet& a, const SubNet& b) {
  return std::abs(a.width - b.width) < 1e-9 && std::abs(a.depth - b.depth) < 1e-9;
}

Batch Batch::to(c10::Device device) const {
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  return {move(input_ids), move(token_type_ids), move(attention_mask), move(pool_mask)};
}

// ---- Building blocks ---------------------------------------------------------------------------

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", at::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", at::zeros({out}));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const {
  return at::linear(x, weight, bias);
}

LayerNormImpl::LayerNormImpl(int64_t size, double eps_) : eps(eps_) {
  weight = register_parameter("weight", at::ones({size}));
  bias = register_parameter("bias", at::zeros({size}));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim) {
  weight = register_parameter("weight", at::empty({count, dim}));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) const {
  return at::embedding(weight, ids);
}

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  fail("unsupported activation '", name, "'");
}

at::Tensor attention_bias(const Batch& batch) {
  const at::Tensor& ids = batch.input_ids;
  if (!ids.defined() || ids.dim() != 2)
    fail("input_ids must be a (batch, seq) tensor, got ", ids.defined() ? ids.dim() : 0, " dims");
  auto check_like = [&](const at::Tensor& t, const char* name) {
    if (t.defined() && t.sizes() != ids.sizes())
      fail(name, " has shape ", t.sizes(), ", expected ", ids.sizes(), " like input_ids");
  };
  check_like(batch.token_type_ids, "token_type_ids");
  check_like(batch.attention_mask, "attention_mask");
  // Adding zeros changes nothing: skipped when nothing is padded.
  if (!batch.attention_mask.defined() || batch.attention_mask.all().item<bool>()) return {};
  return (1.0 - batch.attention_mask.to(at::kFloat))
      .mul_(std::numeric_limits<float>::lowest())
      .view({ids.size(0), 1, ids.size(1)});
}

at::Tensor multi_head_attention(const at::Tensor& qkv, const at::Tensor& head_bias, int64_t h,
                                int64_t d, double dropout, bool train,
                                const at::Tensor& head_scale) {
  const int64_t B = qkv.size(0), T = qkv.size(1);
  const at::Tensor parts = qkv.view({B, T, 3, h, d}).permute({2, 0, 3, 1, 4});  // (3, B, h, T, d)
  const at::Tensor q = parts[0].reshape({B * h, T, d});
  const at::Tensor k = parts[1].reshape({B * h, T, d});
  const at::Tensor v = parts[2].reshape({B * h, T, d});
  // scores = q k^T / sqrt(d) + mask: (B*h, T, T)
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor scores = head_bias.defined() ? at::baddbmm(head_bias, q, k.transpose(1, 2), 1.0, scale)
                                          : at::bmm(q, k.transpose(1, 2)).mul_(scale);
  at::Tensor probs = at::dropout(at::softmax(scores, -1), dropout, train);
  if (head_scale.defined())
    probs = (probs.view({B, h, T, T}) * head_scale.view({1, h, 1, 1})).view({B * h, T, T});
  return at::bmm(probs, v).view({B, h, T, d}).transpose(1, 2).reshape({B, T, h * d});
}

NormMask norm_mask(const at::Tensor& kept) {
  if (!kept.defined()) return {};
  return {kept.to(at::kFloat), static_cast<double>(kept.sum().item<int64_t>())};
}

at::Tensor masked_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             double eps, const NormMask& m) {
  if (!m.weights.defined()) return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  const at::Tensor mean = (x * m.weights).sum(-1, true).div_(m.count);
  const at::Tensor centred = x - mean;
  const at::Tensor var = (centred * centred * m.weights).sum(-1, true).div_(m.count);
  return centred * at::rsqrt(var + eps) * weight + bias;
}

LayerOptions layer_options(const BertConfig& c, const LayerShape& shape, bool train) {
  LayerOptions o;
  o.heads = shape.heads;
  o.head_size = shape.head_size;
  o.act = c.hidden_act;
  o.hidden_dropout = c.hidden_dropout_prob;
  o.attention_dropout = c.attention_probs_dropout_prob;
  o.eps = c.layer_norm_eps;
  o.train = train;
  return o;
}

at::Tensor bert_layer(const at::Tensor& x, const LayerTensors& t, const at::Tensor& head_bias,
                      const LayerOptions& o) {
  const at::Tensor context =
      multi_head_attention(at::linear(x, t.qkv_weight, t.qkv_bias), head_bias, o.heads, o.head_size,
                           o.attention_dropout, o.train, o.head_scale);
  at::Tensor attn =
      at::dropout(at::linear(context, t.attention_output_weight, t.attention_output_bias),
                  o.hidden_dropout, o.train);
  attn = masked_layer_norm(attn.add_(x), t.attention_norm_weight, t.attention_norm_bias, o.eps,
                           o.norm);
  const at::Tensor hidden =
      activation(at::linear(attn, t.intermediate_weight, t.intermediate_bias), o.act);
  at::Tensor out =
      at::dropout(at::linear(hidden, t.output_weight, t.output_bias), o.hidden_dropout, o.train);
  return masked_layer_norm(out.add_(attn), t.output_norm_weight, t.output_norm_bias, o.eps, o.norm);
}

// ---- Embeddings ----------------------------------------------------------------------------

at::Tensor position_rows(const at::Tensor& table, const at::Tensor& input_ids,
                         std::optional<int64_t> padding_idx) {
  const int64_t seq = input_ids.size(1);
  const int64_t max_pos = table.size(0);
  const int64_t first = padding_idx ? *padding_idx + 1 : 0;
  if (seq + first > max_pos)
    fail("sequence length ", seq, " exceeds max_position_embeddings ", max_pos,
         first ? cat(" less the ", first, " positions up to padding_idx") : std::string());
  if (!padding_idx) return table.narrow(0, 0, seq);
  const at::Tensor real = input_ids.ne(*padding_idx).to(at::kLong);
  return at::embedding(table, real.cumsum(1).mul_(real).add_(*padding_idx));
}

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c)
    : dropout(c.hidden_dropout_prob), padding_idx(position_padding_idx(c)) {
  word_embeddings = register_module("word_embeddings", Embedding(c.vocab_size, c.hidden_size));
  position_embeddings =
      register_module("position_embeddings", Embedding(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings =
      register_module("token_type_embeddings", Embedding(c.type_vocab_size, c.hidden_size));
  layer_norm = register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertEmbeddingsImpl::sum(const at::Tensor& input_ids,
                                   const at::Tensor& token_type_ids) const {
  // Token ids are not checked here (a device sync every step): they were, once, where the
  // tokenizer met the model (check_tokenizer_fits) or the shards met it (require_fits_positions).
  // BERT's (T, H) position rows broadcast over the batch.
  at::Tensor x = word_embeddings->forward(input_ids) +
                 position_rows(position_embeddings->weight, input_ids, padding_idx);
  if (token_type_ids.defined()) return x + token_type_embeddings->forward(token_type_ids);
  return x + token_type_embeddings->weight[0];
}

at::Tensor BertEmbeddingsImpl::forward(const at::Tensor& input_ids,
                                       const at::Tensor& token_type_ids) const {
  return at::dropout(layer_norm->forward(sum(input_ids, token_type_ids)), dropout, is_training());
}

// ---- Encoder layer -------------------------------------------------------------------------

namespace {

struct SelfAttentionImpl : torch::nn::Module {
  SelfAttentionImpl(const BertConfig& c, int64_t heads) {
    const int64_t inner = heads * c.attention_head_size();
    query = register_module("query", Linear(c.hidden_size, inner));
    key = register_module("key", Linear(c.hidden_size, inner));
    value = register_module("value", Linear(c.hidden_size, inner));
  }
  Linear query{nullptr}, key{nullptr}, value{nullptr};
};
TORCH_MODULE(SelfAttention);

// A projection followed by dropout, the residual and LayerNorm (attention.output, output).
struct ResidualOutputImpl : torch::nn::Module {
  ResidualOutputImpl(const BertConfig& c, int64_t in) {
    dense = register_module("dense", Linear(in, c.hidden_size));
    layer_norm = register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
  Linear dense{nullptr};
  LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(ResidualOutput);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const BertConfig& c, int64_t heads) {
    self = register_module("self", SelfAttention(c, heads));
    output = register_module("output", ResidualOutput(c, heads * c.attention_head_size()));
  }
  SelfAttention self{nullptr};
  ResidualOutput output{nullptr};
};
TORCH_MODULE(Attention);

struct IntermediateImpl : torch::nn::Module {
  explicit IntermediateImpl(const BertConfig& c) {
    dense = register_module("dense", Linear(c.hidden_size, c.intermediate_size));
  }
  Linear dense{nullptr};
};
TORCH_MODULE(Intermediate);

}  // namespace

struct BertLayerImpl : torch::nn::Module {
  BertLayerImpl(const BertConfig& c, int64_t index) : config(c), layer_index(index) {
    attention = register_module("attention", Attention(c, c.heads_in_layer(index)));
    intermediate = register_module("intermediate", Intermediate(c));
    output = register_module("output", ResidualOutput(c, c.intermediate_size));
  }

  // x: (B, T, H); mask_bias: (B*heads, 1, T) additive, or undefined when nothing is padded.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask_bias, const LayerShape& shape,
                     const at::Tensor& head_scale) const {
    LayerOptions options = layer_options(config, shape, is_training());
    options.head_scale = head_scale;
    return bert_layer(x, tensors(shape), mask_bias, options);
  }

  // The parameters of sub-network shape `shape` as views, but for Q, K and V, which are
  // concatenated: one wide GEMM runs faster than three narrow ones.
  LayerTensors tensors(const LayerShape& shape) const {
    const int64_t inner = shape.heads * shape.head_size;
    auto rows = [](const at::Tensor& t, int64_t n) {
      return n < t.size(0) ? t.narrow(0, 0, n) : t;
    };
    auto cols = [](const at::Tensor& t, int64_t n) {
      return n < t.size(1) ? t.narrow(1, 0, n) : t;
    };
    const auto& sa = *attention->self;
    const auto& ao = *attention->output;
    LayerTensors t;
    t.qkv_weight = at::cat({rows(sa.query->weight, inner), rows(sa.key->weight, inner),
                            rows(sa.value->weight, inner)});
    t.qkv_bias = at::cat(
        {rows(sa.query->bias, inner), rows(sa.key->bias, inner), rows(sa.value->bias, inner)});
    t.attention_output_weight = cols(ao.dense->weight, inner);
    t.attention_output_bias = ao.dense->bias;
    t.attention_norm_weight = ao.layer_norm->weight;
    t.attention_norm_bias = ao.layer_norm->bias;
    t.intermediate_weight = rows(intermediate->dense->weight, shape.ffn);
    t.intermediate_bias = rows(intermediate->dense->bias, shape.ffn);
    t.output_weight = cols(output->dense->weight, shape.ffn);
    t.output_bias = output->dense->bias;
    t.output_norm_weight = output->layer_norm->weight;
    t.output_norm_bias = output->layer_norm->bias;
    return t;
  }

  BertConfig config;
  int64_t layer_index;
  Attention attention{nullptr};
  Intermediate intermediate{nullptr};
  ResidualOutput output{nullptr};
};

BertEncoderImpl::BertEncoderImpl(const BertConfig& c) {
  auto list = register_module("layer", std::make_shared<torch::nn::Module>("LayerList"));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<BertLayerImpl>(c, i));
    list->register_module(std::to_string(i), layers.back());
  }
}

BertPoolerImpl::BertPoolerImpl(const BertConfig& c) {
  dense = register_module("dense", Linear(c.hidden_size, c.hidden_size));
}

at::Tensor BertPoolerImpl::forward(const at::Tensor& hidden) const {
  return at::tanh(dense->forward(hidden.select(1, 0)));
}

// ---- BertModel -----------------------------------------------------------------------------

BertModelImpl::BertModelImpl(const BertConfig& c, bool add_pooling_layer) : config_(c) {
  c.validate();
  embeddings = register_module("embeddings", BertEmbeddings(c));
  encoder = register_module("encoder", BertEncoder(c));
  if (add_pooling_layer) pooler = register_module("pooler", BertPooler(c));
}

Encoded BertModelImpl::forward(const Batch& input, const SubNet& subnet,
                               const at::Tensor& head_mask) const {
  const Batch batch = input.to(device());
  const at::Tensor& ids = batch.input_ids;
  const at::Tensor mask_bias = attention_bias(batch);

  Encoded out;
  at::Tensor x = embeddings->forward(ids, batch.token_type_ids);
  out.hidden_states.push_back(x);
  const auto& layers = encoder->layers;
  for (int64_t l : kept_layers(static_cast<int64_t>(layers.size()), subnet.depth)) {
    const LayerShape shape = layer_shape(config_, l, subnet.width);
    // The mask repeated per head, in the (B*heads, 1, T) layout of the batched products.
    const at::Tensor layer_mask =
        mask_bias.defined() ? mask_bias.repeat_interleave(shape.heads, 0) : mask_bias;
    const at::Tensor head_scale =
        head_mask.defined() ? head_mask[l].narrow(0, 0, shape.heads) : at::Tensor();
    x = layers[static_cast<size_t>(l)]->forward(x, layer_mask, shape, head_scale);
    out.hidden_states.push_back(x);
  }
  if (pooler) out.pooled = pooler->forward(x);
  return out;
}

// ---- Heads -----------------------------------------------------------------------------------

BertMlmHeadImpl::BertMlmHeadImpl(const BertConfig& c) : act(c.hidden_act) {
  transform = register_module("transform", std::make_shared<torch::nn::Module>("Transform"));
  dense = transform->register_module("dense", Linear(c.hidden_size, c.hidden_size));
  layer_norm = transform->register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  bias = register_parameter("bias", at::zeros({c.vocab_size}));
}

at::Tensor BertMlmHeadImpl::forward(const at::Tensor& hidden,
                                    const at::Tensor& word_embeddings) const {
  at::Tensor h = layer_norm->forward(activation(dense->forward(hidden), act));
  return at::linear(h, word_embeddings, bias);
}

BertForMaskedLMImpl::BertForMaskedLMImpl(const BertConfig& c) {
  bert = register_module("bert", BertModel(c, /*add_pooling_layer=*/false));
  auto cls = register_module("cls", std::make_shared<torch::nn::Module>("BertOnlyMLMHead"));
  predictions = cls->register_module("predictions", BertMlmHead(c));
}

at::Tensor BertForMaskedLMImpl::forward(const Batch& batch, const SubNet& subnet) const {
  return logits(bert->forward(batch, subnet).last());
}

at::Tensor BertForMaskedLMImpl::logits(const at::Tensor& hidden) const {
  return predictions->forward(hidden, bert->embeddings->word_embeddings->weight);
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(const BertConfig& c)
    : dropout(c.classifier_dropout.value_or(c.hidden_dropout_prob)) {
  bert = register_module("bert", BertModel(c, /*add_pooling_layer=*/true));
  classifier = register_module("classifier", Linear(c.hidden_size, c.num_labels()));
}

at::Tensor BertForSequenceClassificationImpl::forward(const Batch& batch, const SubNet& subnet,
                                                      const at::Tensor& head_mask) const {
  return logits(bert->forward(batch, subnet, head_mask));
}

at::Tensor BertForSequenceClassificationImpl::logits(const Encoded& encoded) const {
  return classifier->forward(at::dropout(encoded.pooled, dropout, is_training()));
}

// ---- Initialisation --------------------------------------------------------------------------

void init_weights(torch::nn::Module& module, const BertConfig& config, uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    const bool is_norm = name.find("LayerNorm") != std::string::npos;
    if (is_norm) {
      p.fill_(name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 ? 1.0 : 0.0);
    } else if (p.dim() >= 2) {
      p.normal_(0.0, config.initializer_range, gen);
      if (name.find("word_embeddings") != std::string::npos && config.pad_token_id >= 0 &&
          config.pad_token_id < p.size(0))
        p[config.pad_token_id].zero_();
    } else {
      p.zero_();
    }
  }
}

}  // namespace slimbert
