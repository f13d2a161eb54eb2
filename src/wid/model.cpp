// The compactor model: the teacher's parameters plus identity compactors, and its forward.
#include <ATen/ATen.h>

#include "slimbert/core/error.h"
#include "slimbert/model/names.h"
#include "slimbert/wid/wid.h"

namespace slimbert {
namespace {

// Registers `value` as parameter a.b.c.name, creating the intermediate modules.
at::Tensor register_path(torch::nn::Module& root, const std::string& path, at::Tensor value) {
  torch::nn::Module* m = &root;
  size_t start = 0;
  for (size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = path.substr(start, dot - start);
    auto children = m->named_children();
    auto* child = children.find(part);
    m = child ? child->get()
              : m->register_module(part, std::make_shared<torch::nn::Module>(part)).get();
  }
  return m->register_parameter(path.substr(start), std::move(value));
}

}  // namespace

const at::Tensor& mask_of(const WidMasks& masks, MaskRef ref) {
  switch (ref.kind) {
    case MaskKind::kResidual:
      return masks.residual;
    case MaskKind::kAttention:
      return masks.attention.at(static_cast<size_t>(ref.layer));
    case MaskKind::kFfn:
      break;
  }
  return masks.ffn.at(static_cast<size_t>(ref.layer));
}

WidModelImpl::WidModelImpl(BertForMaskedLM teacher)
    : config_(teacher->bert->config()), bert_(teacher->bert) {
  for (const auto& child : teacher->named_children()) register_module(child.key(), child.value());
  for (const auto& p : teacher->named_parameters()) params_[p.key()] = p.value();
  const BertConfig& c = config_;
  if (!c.pruned_heads.empty() || c.num_attention_heads * c.attention_head_size() != c.hidden_size)
    fail("WID needs a teacher whose heads tile the hidden size and no pruned heads");
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const auto on_teacher = param(hf::encoder(hf::path({hf::kWordEmbeddings, "weight"}))).options();

  auto add_compactor = [&](const std::string& name, int64_t d, bool output_side, MaskRef mask) {
    at::Tensor w = register_path(*this, name, at::eye(d, on_teacher));
    params_[name] = w;
    compactors.push_back({name, w, output_side, mask});
  };
  // Linear `prefix` (HF module path) with input dims on `in` and output dims on `out`.
  auto wrap = [&](const std::string& prefix, int64_t d_in, MaskRef in, int64_t d_out, MaskRef out) {
    const std::string base = "compactors." + prefix.substr(prefix.find('.') + 1);
    add_compactor(base + ".in", d_in, false, in);
    add_compactor(base + ".out", d_out, true, out);
  };
  auto masked = [&](const std::string& name, MaskRef mask) {
    masked_parameters.push_back({name, param(name), mask});
  };

  const MaskRef residual{MaskKind::kResidual, 0};
  auto norm = [&](const std::string& module, MaskRef mask) {
    masked(module + ".weight", mask);
    masked(module + ".bias", mask);
  };
  add_compactor("compactors.embeddings", H, true, residual);
  norm(hf::encoder(hf::kEmbeddingNorm), residual);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto in_layer = [&](const char* module) { return hf::encoder_layer(l, module); };
    const MaskRef attn{MaskKind::kAttention, l}, ffn{MaskKind::kFfn, l};
    for (const char* qkv : {hf::kQuery, hf::kKey, hf::kValue}) {
      wrap(in_layer(qkv), H, residual, H, attn);
      masked(in_layer(qkv) + ".bias", attn);
    }
    wrap(in_layer(hf::kAttentionOutput), H, attn, H, residual);
    wrap(in_layer(hf::kIntermediate), H, residual, I, ffn);
    wrap(in_layer(hf::kOutput), I, ffn, H, residual);
    masked(in_layer(hf::kAttentionOutput) + ".bias", residual);
    norm(in_layer(hf::kAttentionNorm), residual);
    masked(in_layer(hf::kOutput) + ".bias", residual);
    norm(in_layer(hf::kOutputNorm), residual);
    masked(in_layer(hf::kIntermediate) + ".bias", ffn);
  }
  // The MLM transform stays on the residual mask so the decoder tie survives the merge.
  wrap(hf::kMlmTransform, H, residual, H, residual);
  masked(std::string(hf::kMlmTransform) + ".bias", residual);
  norm(hf::kMlmNorm, residual);
}

const at::Tensor& WidModelImpl::param(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) fail("WID model: no parameter '", name, "'");
  return it->second;
}

const at::Tensor& WidModelImpl::compactor_in(const std::string& prefix) const {
  return param("compactors." + prefix.substr(prefix.find('.') + 1) + ".in");
}
const at::Tensor& WidModelImpl::compactor_out(const std::string& prefix) const {
  return param("compactors." + prefix.substr(prefix.find('.') + 1) + ".out");
}

std::pair<at::Tensor, at::Tensor> WidModelImpl::compacted(const std::string& prefix) const {
  const at::Tensor& R = compactor_out(prefix);
  return {R.mm(param(prefix + ".weight").mm(compactor_in(prefix))), R.mv(param(prefix + ".bias"))};
}

LayerTensors WidModelImpl::layer_tensors(int64_t l) const {
  auto name = [&](const char* module, const char* tensor) {
    return hf::path({hf::encoder_layer(l, module), tensor});
  };
  LayerTensors t;
  auto [wq, bq] = compacted(hf::encoder_layer(l, hf::kQuery));
  auto [wk, bk] = compacted(hf::encoder_layer(l, hf::kKey));
  auto [wv, bv] = compacted(hf::encoder_layer(l, hf::kValue));
  t.qkv_weight = at::cat({wq, wk, wv});
  t.qkv_bias = at::cat({bq, bk, bv});
  std::tie(t.attention_output_weight, t.attention_output_bias) =
      compacted(hf::encoder_layer(l, hf::kAttentionOutput));
  t.attention_norm_weight = param(name(hf::kAttentionNorm, "weight"));
  t.attention_norm_bias = param(name(hf::kAttentionNorm, "bias"));
  std::tie(t.intermediate_weight, t.intermediate_bias) =
      compacted(hf::encoder_layer(l, hf::kIntermediate));
  std::tie(t.output_weight, t.output_bias) = compacted(hf::encoder_layer(l, hf::kOutput));
  t.output_norm_weight = param(name(hf::kOutputNorm, "weight"));
  t.output_norm_bias = param(name(hf::kOutputNorm, "bias"));
  return t;
}

at::Tensor WidModelImpl::forward(const Batch& input, const WidMasks& masks) const {
  const BertConfig& c = config_;
  const Batch batch = input.to(device());
  const bool train = is_training();
  LayerOptions options = layer_options(c, layer_shape(c, 0, 1.0), train);
  options.norm = norm_mask(masks.residual);

  // The teacher's embeddings seen through the embedding compactor.
  at::Tensor x = at::linear(bert_->embeddings->sum(batch.input_ids, batch.token_type_ids),
                            param("compactors.embeddings"));
  x = masked_layer_norm(x, param(hf::encoder(hf::path({hf::kEmbeddingNorm, "weight"}))),
                        param(hf::encoder(hf::path({hf::kEmbeddingNorm, "bias"}))),
                        c.layer_norm_eps, options.norm);
  x = at::dropout(x, c.hidden_dropout_prob, train);

  // Scores keep the teacher's 1/sqrt(head size) throughout training (§A.9).
  const at::Tensor bias = attention_bias(batch);
  const at::Tensor head_bias = bias.defined() ? bias.repeat_interleave(options.heads, 0) : bias;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    x = bert_layer(x, layer_tensors(l), head_bias, options);
  return x;
}

at::Tensor WidModelImpl::logits(const at::Tensor& rows, const WidMasks& masks) const {
  auto [w, b] = compacted(hf::kMlmTransform);
  const at::Tensor t = masked_layer_norm(activation(at::linear(rows, w, b), config_.hidden_act),
                                         param(hf::path({hf::kMlmNorm, "weight"})),
                                         param(hf::path({hf::kMlmNorm, "bias"})),
                                         config_.layer_norm_eps, norm_mask(masks.residual));
  // The decoder is tied to the word embeddings as seen through the embedding compactor:
  // logits = t C_E E^T + b, which the merge turns into the student's tied decoder.
  return at::linear(t.matmul(param("compactors.embeddings")),
                    param(hf::encoder(hf::path({hf::kWordEmbeddings, "weight"}))),
                    param(hf::kMlmBias));
}

double WidModelImpl::compactor_flops(int64_t sequences, int64_t seq_len, int64_t masked) const {
  const double H = static_cast<double>(config_.hidden_size);
  const double I = static_cast<double>(config_.intermediate_size);
  const double per_layer = 4 * (4 * H * H * H) + 4 * I * H * H + 4 * I * I * H;
  return per_layer * static_cast<double>(config_.num_hidden_layers) + 4 * H * H * H +
         2 * H * H * static_cast<double>(sequences * seq_len + masked);
}

}  // namespace slimbert
