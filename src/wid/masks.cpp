// Which compactor rows/columns are removed (ALGORITHMS.md §A.5), and the gradient surgery that
// drives them to zero (§A.6).
#include <ATen/ATen.h>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"
#include "slimbert/model/names.h"
#include "slimbert/wid/wid.h"

namespace slimbert {
namespace {

// Norms of input dims (columns) of an input-side compactor, or of output dims (rows) otherwise.
at::Tensor dim_scores(const at::Tensor& compactor, bool output_side) {
  return compactor.detach().norm(2, output_side ? 1 : 0);
}

// Kept mask removing the `count` smallest scores (exact count; ties broken by index).
at::Tensor remove_smallest(const at::Tensor& scores, int64_t count) {
  at::Tensor kept = at::ones({scores.size(0)}, scores.options().dtype(at::kBool));
  if (count <= 0) return kept;
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, 0, false));
  kept.index_fill_(0, order.narrow(0, 0, count), false);
  return kept;
}

// Removes the `count` smallest inside each of the consecutive chunks of `chunk` dims.
at::Tensor remove_per_chunk(const at::Tensor& scores, int64_t chunk, int64_t count) {
  std::vector<at::Tensor> parts;
  for (int64_t s = 0; s < scores.size(0); s += chunk)
    parts.push_back(remove_smallest(scores.narrow(0, s, chunk), count));
  return at::cat(parts);
}

// Removes the `count` chunks with the smallest summed scores.
at::Tensor remove_chunks(const at::Tensor& scores, int64_t chunk, int64_t count) {
  const at::Tensor kept_chunks = remove_smallest(scores.view({-1, chunk}).sum(1), count);
  return kept_chunks.repeat_interleave(chunk);
}

std::vector<int64_t> removed_indices(const at::Tensor& kept) {
  const at::Tensor idx = (~kept).nonzero().view(-1).cpu();
  return std::vector<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
}

at::Tensor kept_from_removed(const nlohmann::json& removed, int64_t size,
                             const std::string& where) {
  at::Tensor kept = at::ones({size}, at::kBool);
  for (const auto& v : removed) {
    const int64_t i = v.get<int64_t>();
    if (i < 0 || i >= size) fail(where, ": removed index ", i, " is outside 0..", size - 1);
    kept[i] = false;
  }
  return kept;
}

// Per-dim magnitudes of the weights as the merge would see them (R W L, and the word embeddings
// through C_E): a residual dim sums every weight reading or writing it, an attention-inner dim its
// Q/K/V rows and output column, an FFN neuron its input row and output column.
struct DimScores {
  at::Tensor residual;
  std::vector<at::Tensor> attention, ffn;
};

DimScores weight_scores(const WidModelImpl& model) {
  at::NoGradGuard no_grad;
  const BertConfig& c = model.config();
  auto weight = [&](const std::string& prefix) { return model.compacted(prefix).first; };
  DimScores d;
  d.residual = model.param(hf::encoder(hf::path({hf::kWordEmbeddings, "weight"})))
                   .mm(model.param("compactors.embeddings").t())
                   .norm(2, 0);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto of = [&](const char* module) { return weight(hf::encoder_layer(l, module)); };
    const at::Tensor q = of(hf::kQuery), k = of(hf::kKey), v = of(hf::kValue),
                     o = of(hf::kAttentionOutput), i = of(hf::kIntermediate), f = of(hf::kOutput);
    d.attention.push_back(q.norm(2, 1) + k.norm(2, 1) + v.norm(2, 1) + o.norm(2, 0));
    d.ffn.push_back(i.norm(2, 1) + f.norm(2, 0));
    d.residual = d.residual + q.norm(2, 0) + k.norm(2, 0) + v.norm(2, 0) + i.norm(2, 0) +
                 o.norm(2, 1) + f.norm(2, 1);
  }
  return d;
}

}  // namespace

WidMasks compute_masks(const WidModelImpl& model, const WidSchedule& s, int64_t step) {
  const BertConfig& c = model.config();
  const int64_t H = c.hidden_size, heads = c.num_attention_heads, d = c.attention_head_size();
  const int64_t removed = H - s.target_hidden;
  if (s.w_step <= 0 || removed <= 0) fail("WID schedule: w_step and the removal must be positive");
  const int64_t k = step / s.w_step;  // mask steps so far

  // Attention-side count at mask step k (§A.5): dim removes c_k per head, growing by c/8 (at
  // least 1) per mask step; head removes one head per two mask steps.
  int64_t per_head = 0, whole_heads = 0;
  if (s.strategy == WidStrategy::kDim) {
    const int64_t c_full = removed / heads;
    per_head = std::min(c_full, k * std::max<int64_t>(1, c_full / 8));
  } else {
    whole_heads = std::min(removed / d, k / 2);
  }
  auto attention_rule = [&](const at::Tensor& scores) {
    return s.strategy == WidStrategy::kDim ? remove_per_chunk(scores, d, per_head)
                                           : remove_chunks(scores, d, whole_heads);
  };
  // The residual stream has no heads: a global count unless the reference rule chunks it.
  const int64_t residual_count =
      s.strategy == WidStrategy::kDim ? per_head * heads : whole_heads * d;
  const int64_t I = c.intermediate_size;
  const int64_t ffn_removed = I - I * s.target_hidden / H;
  const int64_t ffn_count = std::min(ffn_removed, k * ffn_removed / 16);

  WidMasks m;
  if (s.scores == MaskScores::kWeights) {
    const DimScores w = weight_scores(model);
    m.residual = remove_smallest(w.residual, residual_count);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      m.attention.push_back(attention_rule(w.attention[static_cast<size_t>(l)]));
      m.ffn.push_back(remove_smallest(w.ffn[static_cast<size_t>(l)], ffn_count));
    }
    return m;
  }
  if (s.residual_score == ResidualScore::kReference) {
    // The reference scores the residual stream from the layer-0 value row compactor, chunked as
    // if it were heads (§A.13.3).
    m.residual =
        attention_rule(dim_scores(model.compactor_in(hf::encoder_layer(0, hf::kValue)), false));
  } else {
    at::Tensor total = at::zeros({H}, model.compactors.at(0).weight.options());
    for (const auto& comp : model.compactors)
      if (comp.mask.kind == MaskKind::kResidual) total += dim_scores(comp.weight, comp.output_side);
    m.residual = remove_smallest(total, residual_count);
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const at::Tensor& attention_in = model.compactor_in(hf::encoder_layer(l, hf::kAttentionOutput));
    const at::Tensor& ffn_in = model.compactor_in(hf::encoder_layer(l, hf::kOutput));
    m.attention.push_back(attention_rule(dim_scores(attention_in, false)));
    m.ffn.push_back(remove_smallest(dim_scores(ffn_in, false), ffn_count));
  }
  return m;
}

WidMasks magnitude_masks(const WidModelImpl& model, const WidSchedule& schedule) {
  WidSchedule s = schedule;
  s.scores = MaskScores::kWeights;
  s.w_step = 1;
  return compute_masks(model, s, mask_steps_to_target(model.config(), s));
}

int64_t mask_steps_to_target(const BertConfig& c, const WidSchedule& s) {
  const int64_t removed = c.hidden_size - s.target_hidden;
  int64_t attention = 0;
  if (s.strategy == WidStrategy::kDim) {
    const int64_t c_full = removed / c.num_attention_heads;
    const int64_t inc = std::max<int64_t>(1, c_full / 8);
    attention = (c_full + inc - 1) / inc;
  } else {
    attention = 2 * (removed / c.attention_head_size());
  }
  return std::max<int64_t>(16, attention);  // the FFN reaches its size after 16
}

KeptSizes kept_sizes(const WidModelImpl& model, const WidMasks& masks) {
  const BertConfig& c = model.config();
  if (!masks.active()) return {c.hidden_size, c.hidden_size, c.intermediate_size};
  KeptSizes k{masks.residual.sum().item<int64_t>(), c.hidden_size, c.intermediate_size};
  for (const auto& a : masks.attention)
    k.attention = std::min(k.attention, a.sum().item<int64_t>());
  for (const auto& f : masks.ffn) k.ffn = std::min(k.ffn, f.sum().item<int64_t>());
  return k;
}

WidMasks WidMasks::to(c10::Device device) const {
  if (!active()) return *this;
  WidMasks m{residual.to(device), {}, {}};
  for (const auto& a : attention) m.attention.push_back(a.to(device));
  for (const auto& f : ffn) m.ffn.push_back(f.to(device));
  return m;
}

nlohmann::json WidMasks::to_json() const {
  if (!active()) return nullptr;
  nlohmann::json j;
  j["residual_removed"] = removed_indices(residual);
  for (const auto& a : attention) j["attention_removed"].push_back(removed_indices(a));
  for (const auto& f : ffn) j["ffn_removed"].push_back(removed_indices(f));
  return j;
}

WidMasks WidMasks::from_json(const nlohmann::json& j, const BertConfig& t,
                             const std::string& source) {
  WidMasks m;
  if (j.is_null()) return m;
  try {
    m.residual =
        kept_from_removed(j.at("residual_removed"), t.hidden_size, source + ": residual_removed");
    const auto& att = j.at("attention_removed");
    const auto& ffn = j.at("ffn_removed");
    if (static_cast<int64_t>(att.size()) != t.num_hidden_layers ||
        static_cast<int64_t>(ffn.size()) != t.num_hidden_layers)
      fail(source, ": masks for ", att.size(), "/", ffn.size(), " layers, the teacher has ",
           t.num_hidden_layers);
    for (int64_t l = 0; l < t.num_hidden_layers; ++l) {
      m.attention.push_back(kept_from_removed(att[static_cast<size_t>(l)], t.hidden_size,
                                              source + ": attention_removed"));
      m.ffn.push_back(kept_from_removed(ffn[static_cast<size_t>(l)], t.intermediate_size,
                                        source + ": ffn_removed"));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": malformed WID masks: ", json_error_message(e));
  }
  return m;
}

at::Tensor removed_entries(const Compactor& compactor, const WidMasks& masks) {
  const at::Tensor removed = ~mask_of(masks, compactor.mask);
  return compactor.output_side ? removed.unsqueeze(1) : removed.unsqueeze(0);
}

void for_each_removed(
    const WidModelImpl& model, const WidMasks& masks,
    const std::function<void(const std::string&, const at::Tensor&, const at::Tensor&)>& f) {
  for (const auto& c : model.compactors) f(c.name, c.weight, removed_entries(c, masks));
  for (const auto& mp : model.masked_parameters) f(mp.name, mp.param, ~mask_of(masks, mp.mask));
}

void shrink_removed(WidModelImpl& model, const WidMasks& masks, const WidSchedule& schedule,
                    int64_t step, int64_t target_step, int64_t total) {
  if (schedule.zero_by <= 0 || step <= target_step || !masks.active()) return;
  const int64_t zero_at =
      target_step + static_cast<int64_t>(std::ceil(schedule.zero_by * (total - target_step)));
  // Scaling by (Z - t) / (Z - t + 1) at every step t telescopes to the linear ramp; entries
  // removed later (masks still change under compactor scores) ramp from their value then.
  const double scale = step >= zero_at ? 0.0
                                       : static_cast<double>(zero_at - step) /
                                             static_cast<double>(zero_at - step + 1);
  at::NoGradGuard no_grad;
  for_each_removed(model, masks, [&](const std::string&, const at::Tensor& p, const at::Tensor& r) {
    p.copy_(at::where(r, p * scale, p));
  });
}

double largest_removed_entry(const WidModelImpl& model, const WidMasks& masks) {
  if (!masks.active()) return 0;
  at::NoGradGuard no_grad;
  double largest = 0;
  for_each_removed(model, masks, [&](const std::string&, const at::Tensor& p, const at::Tensor& r) {
    largest = std::max(largest, at::where(r, p.abs(), at::zeros_like(p)).max().item<double>());
  });
  return largest;
}

void apply_gradient_surgery(WidModelImpl& model, const WidMasks& masks, bool pruning,
                            const SurgeryOptions& o,
                            const std::function<at::Tensor&(const std::string&)>& exp_avg) {
  at::NoGradGuard no_grad;
  const double pull = std::min(o.lambda, 1.0);
  // Removed entries: the task gradient is replaced by min(lambda, 1) p; for lambda > 1 the
  // first moment also gets (lambda - 1) p, as the reference does (it decays every entry's moment
  // by beta1 once more, kept ones included).
  auto pull_removed = [&](const std::string& name, const at::Tensor& p, const at::Tensor& removed) {
    at::Tensor g = p.mutable_grad();
    if (!g.defined()) return;
    g.copy_(at::where(removed, p * pull, g));
    if (o.lambda > 1) {
      at::Tensor& m = exp_avg(name);
      m.mul_(o.beta1).add_(at::where(removed, p * (o.lambda - 1), at::zeros_like(p)), 1 - o.beta1);
    }
  };
  if (pruning) {
    for_each_removed(model, masks, pull_removed);
    return;
  }
  for (auto& c : model.compactors)
    if (c.weight.grad().defined()) c.weight.mutable_grad().add_(c.weight, o.warm_l2);
}

}  // namespace slimbert
