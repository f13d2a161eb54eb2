// The compactor model: the teacher's parameters plus identity compactors, and its forward.
#include <ATen/ATen.h>

#include "slimbert/core/error.h"
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

std::string layer_prefix(int64_t l) {
  return "bert.encoder.layer." + std::to_string(l) + ".";
}

// Float kept-mask and its count for LayerNorm statistics over kept dims.
struct LnMask {
  at::Tensor weights;  // (H) 1 kept, 0 removed; undefined = plain LayerNorm
  double count = 0;
};

LnMask ln_mask(const at::Tensor& kept) {
  if (!kept.defined()) return {};
  // On the masks' device, which is the model's (WidMasks::to).
  return {kept.to(at::kFloat), static_cast<double>(kept.sum().item<int64_t>())};
}

// HF LayerNorm with mean and (biased) variance over the kept dims only, applied to every dim.
at::Tensor masked_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             double eps, const LnMask& m) {
  if (!m.weights.defined()) return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  const at::Tensor mean = (x * m.weights).sum(-1, true).div_(m.count);
  const at::Tensor centred = x - mean;
  const at::Tensor var = (centred * centred * m.weights).sum(-1, true).div_(m.count);
  return centred * at::rsqrt(var + eps) * weight + bias;
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

WidModelImpl::WidModelImpl(BertForMaskedLM teacher) : config_(teacher->bert->config()) {
  for (const auto& child : teacher->named_children()) register_module(child.key(), child.value());
  for (const auto& p : teacher->named_parameters()) params_[p.key()] = p.value();
  const BertConfig& c = config_;
  if (!c.pruned_heads.empty() || c.num_attention_heads * c.attention_head_size() != c.hidden_size)
    fail("WID needs a teacher whose heads tile the hidden size and no pruned heads");
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const auto on_teacher = param("bert.embeddings.word_embeddings.weight").options();

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
  add_compactor("compactors.embeddings", H, true, residual);
  masked("bert.embeddings.LayerNorm.weight", residual);
  masked("bert.embeddings.LayerNorm.bias", residual);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    const MaskRef attn{MaskKind::kAttention, l}, ffn{MaskKind::kFfn, l};
    for (const char* qkv : {"query", "key", "value"}) {
      wrap(p + "attention.self." + qkv, H, residual, H, attn);
      masked(p + "attention.self." + qkv + ".bias", attn);
    }
    wrap(p + "attention.output.dense", H, attn, H, residual);
    wrap(p + "intermediate.dense", H, residual, I, ffn);
    wrap(p + "output.dense", I, ffn, H, residual);
    for (const char* name : {"attention.output.dense.bias", "attention.output.LayerNorm.weight",
                             "attention.output.LayerNorm.bias", "output.dense.bias",
                             "output.LayerNorm.weight", "output.LayerNorm.bias"})
      masked(p + name, residual);
    masked(p + "intermediate.dense.bias", ffn);
  }
  // The MLM transform stays on the residual mask so the decoder tie survives the merge.
  wrap("cls.predictions.transform.dense", H, residual, H, residual);
  masked("cls.predictions.transform.dense.bias", residual);
  masked("cls.predictions.transform.LayerNorm.weight", residual);
  masked("cls.predictions.transform.LayerNorm.bias", residual);
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

at::Tensor WidModelImpl::forward(const Batch& input, const WidMasks& masks) const {
  const BertConfig& c = config_;
  const Batch batch = input.to(device());
  const bool train = is_training();
  const at::Tensor bias = attention_bias(batch);
  const at::Tensor& ids = batch.input_ids;
  const int64_t T = ids.size(1);
  if (T > c.max_position_embeddings)
    fail("sequence length ", T, " exceeds max_position_embeddings ", c.max_position_embeddings);
  const LnMask m = ln_mask(masks.residual);
  const double eps = c.layer_norm_eps;

  at::Tensor x = at::embedding(param("bert.embeddings.word_embeddings.weight"), ids) +
                 param("bert.embeddings.position_embeddings.weight").narrow(0, 0, T);
  const at::Tensor& types = param("bert.embeddings.token_type_embeddings.weight");
  x = batch.token_type_ids.defined() ? x + at::embedding(types, batch.token_type_ids)
                                     : x + types[0];
  x = at::linear(x, param("compactors.embeddings"));
  x = masked_layer_norm(x, param("bert.embeddings.LayerNorm.weight"),
                        param("bert.embeddings.LayerNorm.bias"), eps, m);
  x = at::dropout(x, c.hidden_dropout_prob, train);

  const int64_t heads = c.num_attention_heads;
  const at::Tensor head_bias = bias.defined() ? bias.repeat_interleave(heads, 0) : bias;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    auto [wq, bq] = compacted(p + "attention.self.query");
    auto [wk, bk] = compacted(p + "attention.self.key");
    auto [wv, bv] = compacted(p + "attention.self.value");
    const at::Tensor qkv = at::linear(x, at::cat({wq, wk, wv}), at::cat({bq, bk, bv}));
    // Scores keep the teacher's 1/sqrt(head size) throughout training (§A.9).
    const at::Tensor context = multi_head_attention(qkv, head_bias, heads, c.attention_head_size(),
                                                    c.attention_probs_dropout_prob, train);
    auto [wo, bo] = compacted(p + "attention.output.dense");
    at::Tensor a = at::dropout(at::linear(context, wo, bo), c.hidden_dropout_prob, train);
    a = masked_layer_norm(a + x, param(p + "attention.output.LayerNorm.weight"),
                          param(p + "attention.output.LayerNorm.bias"), eps, m);
    auto [w1, b1] = compacted(p + "intermediate.dense");
    const at::Tensor h = activation(at::linear(a, w1, b1), c.hidden_act);
    auto [w2, b2] = compacted(p + "output.dense");
    at::Tensor o = at::dropout(at::linear(h, w2, b2), c.hidden_dropout_prob, train);
    x = masked_layer_norm(o + a, param(p + "output.LayerNorm.weight"),
                          param(p + "output.LayerNorm.bias"), eps, m);
  }
  return x;
}

at::Tensor WidModelImpl::logits(const at::Tensor& rows, const WidMasks& masks) const {
  auto [w, b] = compacted("cls.predictions.transform.dense");
  const at::Tensor t = masked_layer_norm(activation(at::linear(rows, w, b), config_.hidden_act),
                                         param("cls.predictions.transform.LayerNorm.weight"),
                                         param("cls.predictions.transform.LayerNorm.bias"),
                                         config_.layer_norm_eps, ln_mask(masks.residual));
  // The decoder is tied to the word embeddings as seen through the embedding compactor:
  // logits = t C_E E^T + b, which the merge turns into the student's tied decoder.
  return at::linear(t.matmul(param("compactors.embeddings")),
                    param("bert.embeddings.word_embeddings.weight"), param("cls.predictions.bias"));
}

double WidModelImpl::compactor_flops(int64_t sequences, int64_t seq_len, int64_t masked) const {
  const double H = static_cast<double>(config_.hidden_size);
  const double I = static_cast<double>(config_.intermediate_size);
  const double per_layer = 4 * (4 * H * H * H) + 4 * I * H * H + 4 * I * I * H;
  return per_layer * static_cast<double>(config_.num_hidden_layers) + 4 * H * H * H +
         2 * H * H * static_cast<double>(sequences * seq_len + masked);
}

}  // namespace slimbert
