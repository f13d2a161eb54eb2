// Head and neuron importance, rewiring, and static export of sub-networks.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <random>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/sentence_transformers.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/history.h"
#include "slimbert/model/names.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Named parameters of `module` by name.
std::map<std::string, at::Tensor> params_of(torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (auto& p : module.named_parameters()) out[p.key()] = p.value();
  return out;
}

// Layer l's `module`.`tensor` inside BertModel.
std::string layer_name(int64_t l, const char* module, const char* tensor) {
  return hf::path({hf::layer(l), module, tensor});
}

// A config.json that disagrees with its weights would otherwise be sliced into an unloadable
// checkpoint: the weights are loaded into the model the config describes (with the head they
// carry), which names every tensor whose shape differs.
void require_weights_fit_config(const BertConfig& c, const TensorMap& weights,
                                const std::string& source) {
  check_config_matches_weights(c, weights, source);
  at::NoGradGuard no_grad;
  if (weights.count(hf::path({hf::kClassifier, "weight"}))) {
    BertForSequenceClassification m(c);
    load_state(*m, weights, source);
  } else if (weights.count(hf::kMlmBias)) {
    BertForMaskedLM m(c);
    load_state(*m, weights, source);
  } else {
    const bool pooler = weights.count(hf::encoder(hf::path({hf::kPooler, "weight"}))) ||
                        weights.count(hf::path({hf::kPooler, "weight"}));
    BertModel m(c, pooler);
    load_state(*m, weights, source);
  }
}

void require_unpruned(const BertConfig& c, const char* what) {
  if (!c.pruned_heads.empty())
    fail(what, " needs a model without pruned heads (config.json lists pruned_heads)");
}

}  // namespace

// ---- Static export ----------------------------------------------------------------------------

std::pair<BertConfig, TensorMap> extract_subnet(const BertConfig& c, const TensorMap& weights,
                                                const SubNet& subnet, DroppedHeads heads) {
  require_unpruned(c, "sub-network export");
  const std::vector<int64_t> layers = kept_layers(c.num_hidden_layers, subnet.depth);
  const LayerShape shape = layer_shape(c, 0, subnet.width);
  const int64_t inner = shape.heads * shape.head_size;

  BertConfig out = c;
  out.num_hidden_layers = static_cast<int64_t>(layers.size());
  out.intermediate_size = shape.ffn;
  const bool zeroed = heads == DroppedHeads::kZeroed;
  if (!zeroed)
    for (int64_t l = 0; l < out.num_hidden_layers; ++l)
      for (int64_t h = shape.heads; h < c.num_attention_heads; ++h) out.pruned_heads[l].insert(h);
  // The dropped heads' slice [inner, all) along `dim`: cut off, or kept as zeros.
  auto first_heads = [&](const at::Tensor& t, int64_t dim) {
    if (!zeroed) return t.narrow(dim, 0, inner);
    at::Tensor z = t.clone();
    z.narrow(dim, inner, t.size(dim) - inner).zero_();
    return z;
  };

  TensorMap w;
  for (const auto& [name, t] : weights) {
    std::optional<hf::LayerParameter> p = hf::parse_layer_parameter(name);
    if (!p) {
      w[name] = t;
      continue;
    }
    const auto pos = std::find(layers.begin(), layers.end(), p->layer);
    if (pos == layers.end()) continue;
    const std::string& rest = p->rest;
    auto is = [&](const char* module, const char* tensor) {
      return rest == hf::path({module, tensor});
    };
    at::Tensor v = t;
    if (starts_with(rest, hf::kQuery) || starts_with(rest, hf::kKey) ||
        starts_with(rest, hf::kValue))
      v = first_heads(v, 0);
    if (is(hf::kAttentionOutput, "weight")) v = first_heads(v, 1);
    if (starts_with(rest, hf::kIntermediate)) v = v.narrow(0, 0, shape.ffn);
    if (is(hf::kOutput, "weight")) v = v.narrow(1, 0, shape.ffn);
    p->layer = pos - layers.begin();
    w[p->name()] = v.contiguous();
  }
  return {out, w};
}

BertConfig export_subnet(const std::string& model_dir, const SubNet& subnet, const std::string& out,
                         DroppedHeads heads) {
  const BertConfig config = load_config_dir(model_dir);
  const TensorMap all = load_weights(model_dir);
  require_weights_fit_config(config, all, weights_path(model_dir));
  auto [small, weights] = extract_subnet(config, all, subnet, heads);
  add_history(small, "exported " + subnet_name(subnet));
  // The tokenizer travels with the model when the source has one (weights-only dirs export too).
  std::optional<Tokenizer> tokenizer;
  if (Tokenizer::found_in(model_dir)) {
    tokenizer = Tokenizer::from_dir(model_dir);
    if (tokenizer->vocab().size() != small.vocab_size)
      fail(model_dir, ": tokenizer vocabulary has ", tokenizer->vocab().size(),
           " tokens, config vocab_size is ", small.vocab_size);
  }
  write_dir_atomic(out, [&](const std::string& staging) {
    small.save(staging + "/config.json");
    save_weights(staging, to_family_names(weights, family_of(small)), DType::F32, 0);
    if (tokenizer) tokenizer->save(staging);
    infer::copy_sentence_transformer_files(model_dir, staging);
  });
  return small;
}

void export_onnx(const std::string& model_dir, const SubNet& subnet, const OnnxOptions& options,
                 const std::string& out) {
  const BertConfig config = load_config_dir(model_dir);
  const TensorMap all = load_weights(model_dir);
  require_weights_fit_config(config, all, weights_path(model_dir));
  // The whole model goes as it is (pruned heads included); a sub-network is sliced first.
  if (same_subnet(subnet, SubNet{})) return write_onnx(config, all, options, out);
  const auto [small, weights] = extract_subnet(config, all, subnet);
  write_onnx(small, weights, options, out);
}

// ---- Importance -------------------------------------------------------------------------------

namespace {

// The loss on rows [begin, end) with attention scaled by `head_mask`.
using RowsLoss = std::function<at::Tensor(size_t begin, size_t end, const at::Tensor& head_mask)>;

// Head scores are |dL / d head_mask|; a neuron's is the first-order Taylor term of its
// intermediate row (weight and bias) and output column. `whole` holds `encoder` and any head:
// all of its gradients are cleared.
Importance score_heads_and_neurons(torch::nn::Module& whole, BertModel& encoder, size_t rows,
                                   int64_t batch_size, const ImportanceOptions& options,
                                   const RowsLoss& loss_of) {
  const BertConfig& c = encoder->config();
  require_unpruned(c, "importance scoring");
  whole.eval();  // as the reference: from_pretrained leaves the model in eval mode
  auto params = params_of(*encoder);
  const auto on_model = params.begin()->second.options();
  Importance imp{at::zeros({c.num_hidden_layers, c.num_attention_heads}, on_model),
                 at::zeros({c.num_hidden_layers, c.intermediate_size}, on_model)};
  at::Tensor head_mask = at::ones({c.num_hidden_layers, c.num_attention_heads}, on_model);
  head_mask.set_requires_grad(true);
  auto clear = [&] {
    for (auto& p : whole.parameters())
      if (p.grad().defined()) p.mutable_grad().zero_();
  };
  clear();
  const size_t B = static_cast<size_t>(batch_size);
  for (size_t begin = 0; begin < rows; begin += B) {
    const size_t end = std::min(rows, begin + B);
    if (!options.cumulative_gradients) {
      clear();
      if (head_mask.grad().defined()) head_mask.mutable_grad().zero_();
    }
    loss_of(begin, end, head_mask).backward();
    at::NoGradGuard no_grad;
    imp.heads += head_mask.grad().abs();
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const at::Tensor& w1 = params.at(layer_name(l, hf::kIntermediate, "weight"));
      const at::Tensor& b1 = params.at(layer_name(l, hf::kIntermediate, "bias"));
      const at::Tensor& w2 = params.at(layer_name(l, hf::kOutput, "weight"));
      const at::Tensor in = (w1 * w1.grad()).sum(1) + b1 * b1.grad();
      const at::Tensor out = (w2 * w2.grad()).sum(0);
      imp.neurons[l] += in.abs() + out.abs();
    }
  }
  clear();
  return imp;
}

std::vector<size_t> in_order(size_t n) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  return order;
}

}  // namespace

Importance compute_importance(BertForSequenceClassification& model, const EncodedTask& data,
                              bool regression, int64_t batch_size, int64_t pad_id,
                              const ImportanceOptions& options) {
  const std::vector<size_t> order = in_order(data.inputs.size());
  return score_heads_and_neurons(
      *model, model->bert, order.size(), batch_size, options,
      [&](size_t begin, size_t end, const at::Tensor& head_mask) {
        const at::Tensor logits =
            model->forward(batch_of(data.inputs, order, begin, end, pad_id), {}, head_mask);
        return task_loss(logits, data, order, begin, end, regression);
      });
}

Importance compute_importance(BertModel& model, const EncodedPairs& pairs, const SentenceHead& head,
                              int64_t batch_size, int64_t pad_id,
                              const ImportanceOptions& options) {
  if (pairs.gold.size() != pairs.a.size() || pairs.a.empty())
    fail(pairs.source, ": importance needs labelled pairs");
  const auto [lo, hi] = std::minmax_element(pairs.gold.begin(), pairs.gold.end());
  if (*hi == *lo) fail(pairs.source, ": every pair has the label ", *lo, ": nothing to rank");
  // CosineSimilarityLoss's targets: the labels scaled to [0, 1].
  std::vector<float> scaled;
  for (double g : pairs.gold) scaled.push_back(static_cast<float>((g - *lo) / (*hi - *lo)));
  const at::Tensor target = at::tensor(scaled).to(model->device());
  const std::vector<size_t> order = in_order(pairs.a.size());
  return score_heads_and_neurons(
      *model, model, order.size(), batch_size, options,
      [&](size_t begin, size_t end, const at::Tensor& head_mask) {
        auto vectors = [&](const std::vector<Encoding>& texts) {
          const Batch batch = batch_of(texts, order, begin, end, pad_id).to(model->device());
          return sentence_vectors(model->forward(batch, {}, head_mask), batch, head);
        };
        const at::Tensor cos = at::cosine_similarity(vectors(pairs.a), vectors(pairs.b), 1, 1e-12);
        return at::mse_loss(
            cos, target.slice(0, static_cast<int64_t>(begin), static_cast<int64_t>(end)));
      });
}

// ---- Rewiring ---------------------------------------------------------------------------------

namespace {

nlohmann::json rows_of(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    const at::Tensor row = t[r].to(at::kCPU, at::kDouble).contiguous();
    out.push_back(
        std::vector<double>(row.data_ptr<double>(), row.data_ptr<double>() + row.numel()));
  }
  return out;
}

}  // namespace

RewireResult rewire_model(const RewireOptions& o) {
  const BertConfig config = load_config_dir(o.model_dir);
  const Tokenizer tokenizer = Tokenizer::from_dir(o.model_dir);
  check_tokenizer_fits(tokenizer, config, o.model_dir);
  const bool classifier = has_classifier_weights(o.model_dir);
  // A classifier reads the labels in its own order; an embedding model ranks pairs by them.
  const TaskSpec spec = classifier ? task_for_model(config, o.task, o.data_dir, o.skip_bad_rows)
                                   : TaskSpec::make(o.task, o.data_dir, o.skip_bad_rows);
  TaskData data = spec.load(o.split);
  if (o.examples > 0 && static_cast<int64_t>(data.examples.size()) > o.examples) {
    std::mt19937_64 rng(o.seed);
    std::shuffle(data.examples.begin(), data.examples.end(), rng);
    data.examples.resize(static_cast<size_t>(o.examples));
  }
  RewireResult r;
  r.source = data.source;
  BertConfig rewired = config;
  add_history(rewired, "rewired");
  auto announce = [&](size_t n, const char* what) {
    std::cerr << "dynabert rewire: scoring " << n << " " << what << " of " << data.source << "\n";
    r.examples = static_cast<int64_t>(n);
  };
  if (classifier) {
    BertForSequenceClassification model = load_classifier(o.model_dir);
    const EncodedTask enc = encode_task(tokenizer, spec, data, o.max_length, true);
    announce(enc.inputs.size(), "examples");
    r.importance = compute_importance(model, enc, spec.regression, o.batch_size, tokenizer.pad_id(),
                                      o.importance);
    rewire(model->bert, r.importance);
    save_checkpoint(o.out_dir, rewired, *model, tokenizer);
  } else {
    BertModel model = load_encoder(o.model_dir);
    const EncodedPairs pairs = encode_pairs(
        tokenizer, spec, data, infer::max_input_length(config, tokenizer, o.max_length), true);
    announce(pairs.a.size(), "pairs");
    r.importance = compute_importance(model, pairs, sentence_head_of(o.model_dir), o.batch_size,
                                      tokenizer.pad_id(), o.importance);
    rewire(model, r.importance);
    SaveOptions save;
    save.extra_files = [&](const std::string& dir) {
      infer::copy_sentence_transformer_files(o.model_dir, dir);
    };
    save_checkpoint(o.out_dir, rewired, *model, tokenizer, save);
  }
  nlohmann::json report = {{"source", data.source},
                           {"examples", r.examples},
                           {"loss", classifier ? "task" : "cosine_similarity"},
                           {"cumulative_gradients", o.importance.cumulative_gradients},
                           {"head_importance", rows_of(r.importance.heads)},
                           {"neuron_importance", rows_of(r.importance.neurons)}};
  for (const auto& order : head_order(r.importance)) {
    const at::Tensor o64 = order.cpu().contiguous();
    report["head_order"].push_back(
        std::vector<int64_t>(o64.data_ptr<int64_t>(), o64.data_ptr<int64_t>() + o64.numel()));
  }
  write_file_atomic(o.out_dir + "/importance.json", report.dump() + "\n");
  return r;
}

namespace {

std::vector<at::Tensor> descending(const at::Tensor& scores) {
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < scores.size(0); ++l)
    out.push_back(std::get<1>(at::sort(scores[l], /*stable=*/true, 0, /*descending=*/true)));
  return out;
}

}  // namespace

std::vector<at::Tensor> head_order(const Importance& importance) {
  return descending(importance.heads);
}
std::vector<at::Tensor> neuron_order(const Importance& importance) {
  return descending(importance.neurons);
}

void rewire(BertModel& model, const Importance& importance) {
  const BertConfig& c = model->config();
  require_unpruned(c, "rewiring");
  const int64_t d = c.attention_head_size();
  auto params = params_of(*model);
  const auto heads = head_order(importance), neurons = neuron_order(importance);
  at::NoGradGuard no_grad;
  auto permute = [&](const std::string& name, int64_t dim, const at::Tensor& idx) {
    at::Tensor& p = params.at(name);
    p.copy_(p.index_select(dim, idx));
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // Head h's rows are [h d, (h + 1) d).
    const at::Tensor rows = (heads[static_cast<size_t>(l)].unsqueeze(1) * d +
                             at::arange(d, heads[static_cast<size_t>(l)].options()).unsqueeze(0))
                                .reshape(-1);
    for (const char* m : {hf::kQuery, hf::kKey, hf::kValue}) {
      permute(layer_name(l, m, "weight"), 0, rows);
      permute(layer_name(l, m, "bias"), 0, rows);
    }
    permute(layer_name(l, hf::kAttentionOutput, "weight"), 1, rows);
    const at::Tensor& n = neurons[static_cast<size_t>(l)];
    permute(layer_name(l, hf::kIntermediate, "weight"), 0, n);
    permute(layer_name(l, hf::kIntermediate, "bias"), 0, n);
    permute(layer_name(l, hf::kOutput, "weight"), 1, n);
  }
}

}  // namespace slimbert
