#include "slimbert/io/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/runtime.h"
#include "slimbert/model/names.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_base_key(const std::string& k) {
  return starts_with(k, "embeddings.") || starts_with(k, "encoder.") || starts_with(k, "pooler.");
}

// The head a tensor belongs to ("cls.", "classifier.", "pooler." ...), or "" for the encoder.
std::string head_of(const std::string& k) {
  for (const char* head : {"cls.", "classifier.", "pooler.", "bert.pooler."})
    if (starts_with(k, head)) return head;
  return "";
}
bool is_head_key(const std::string& k) {
  return !head_of(k).empty();
}

std::string join_list(const std::vector<std::string>& names, size_t max_shown = 20) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max_shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max_shown) s += cat(", ... (", names.size(), " in all)");
  return s;
}

}  // namespace

LoadReport load_state(torch::nn::Module& module, const TensorMap& weights,
                      const std::string& source, const LoadOptions& options) {
  auto params = module.named_parameters(/*recurse=*/true);
  bool model_prefixed = false, file_prefixed = false;
  std::set<std::string> model_heads;
  for (const auto& p : params) {
    model_prefixed |= starts_with(p.key(), "bert.");
    if (is_head_key(p.key())) model_heads.insert(head_of(p.key()));
  }
  for (const auto& [k, t] : weights) file_prefixed |= starts_with(k, "bert.");

  // Tensors are named in messages as the file names them.
  auto file_name = [&](const std::string& model_name) {
    if (!model_prefixed && file_prefixed && is_base_key(model_name)) return "bert." + model_name;
    if (model_prefixed && !file_prefixed && starts_with(model_name, "bert."))
      return model_name.substr(5);
    return model_name;
  };

  // File name -> model name.
  TensorMap mapped;
  LoadReport report;
  std::vector<std::string> unexpected;
  for (const auto& [key, tensor] : weights) {
    std::string name = key;
    if (model_prefixed && !file_prefixed && is_base_key(key)) name = "bert." + key;
    if (!model_prefixed && file_prefixed && starts_with(key, "bert.")) name = key.substr(5);
    if (name == "cls.predictions.decoder.bias") {
      // Same tensor as cls.predictions.bias; old checkpoints store only this alias.
      if (!weights.count("cls.predictions.bias")) name = "cls.predictions.bias";
    }
    if (params.contains(name)) {
      mapped[name] = tensor;
    } else if (name == "cls.predictions.decoder.weight" || name == "cls.predictions.decoder.bias" ||
               ends_with(name, "position_ids") || ends_with(name, "embeddings.token_type_ids") ||
               (is_head_key(name) && !model_heads.count(head_of(name)))) {
      // Another head's tensors, tied aliases, and buffers HF used to store.
      report.ignored.push_back(key);
    } else {
      unexpected.push_back(key);
    }
  }
  if (!unexpected.empty())
    fail(source, ": unexpected tensors (not part of this model): ", join_list(unexpected));

  std::vector<std::string> missing;
  for (const auto& p : params)
    if (!mapped.count(p.key())) missing.push_back(file_name(p.key()));
  if (!missing.empty()) {
    bool heads_only = true;
    for (const auto& m : missing) heads_only &= is_head_key(m);
    if (!(options.init_missing_heads && heads_only))
      fail(source, ": missing tensors: ", join_list(missing));
    report.initialized = missing;
  }

  at::NoGradGuard no_grad;
  for (auto& p : params) {
    auto it = mapped.find(p.key());
    if (it == mapped.end()) continue;
    const at::Tensor& src = it->second;
    if (src.sizes() != p.value().sizes())
      fail(source, ": ", file_name(p.key()), ": expected ", p.value().sizes(), ", file has ",
           src.sizes());
    if (!at::isFloatingType(src.scalar_type()))
      fail(source, ": ", file_name(p.key()), ": expected a floating-point tensor, file has ",
           at::toString(src.scalar_type()));
    p.value().copy_(src);
  }
  return report;
}

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value().detach();
  return out;
}

void write_checkpoint_files(const std::string& dir, const BertConfig& config,
                            const torch::nn::Module& model, const Tokenizer& tokenizer,
                            const SaveOptions& options) {
  if (tokenizer.vocab().size() != config.vocab_size)
    fail(dir, ": tokenizer vocabulary has ", tokenizer.vocab().size(),
         " tokens, config vocab_size is ", config.vocab_size);
  config.save((fs::path(dir) / "config.json").string());
  save_weights(dir, to_family_names(state_dict(model), family_of(config)), options.float_dtype,
               options.max_shard_bytes);
  tokenizer.save(dir);
  if (options.extra_files) options.extra_files(dir);
}

void save_checkpoint(const std::string& dir, const BertConfig& config,
                     const torch::nn::Module& model, const Tokenizer& tokenizer,
                     const SaveOptions& options) {
  if (tokenizer.vocab().size() != config.vocab_size)  // before any file is staged
    fail(dir, ": tokenizer vocabulary has ", tokenizer.vocab().size(),
         " tokens, config vocab_size is ", config.vocab_size);
  write_dir_atomic(dir, [&](const std::string& staging) {
    write_checkpoint_files(staging, config, model, tokenizer, options);
  });
}

BertConfig load_config_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) fail(dir, ": checkpoint directory not found");
  return BertConfig::load((fs::path(dir) / "config.json").string());
}

void check_tokenizer_fits(const Tokenizer& tokenizer, const BertConfig& config,
                          const std::string& dir) {
  if (tokenizer.vocab().size() > config.vocab_size)
    fail(dir, ": the tokenizer's vocabulary (vocab.txt) has ", tokenizer.vocab().size(),
         " tokens, ids outside the model's vocabulary of ", config.vocab_size,
         " (config.json's vocab_size): is vocab.txt longer than config.json's vocab_size?");
}

std::string weights_path(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path bin = fs::path(dir) / "pytorch_model.bin";
  if (fs::exists(single)) return single.string();
  return fs::exists(index) || !fs::exists(bin) ? index.string() : bin.string();
}

namespace {

template <typename Model>
Model load_into(const std::function<Model()>& make, const BertConfig& config,
                const std::string& dir, const LoadOptions& options, const TensorMap& weights) {
  check_config_matches_weights(config, weights, weights_path(dir));
  Model model = make();
  if (options.init_missing_heads) init_weights(*model, config, options.seed);
  load_state(*model, weights, weights_path(dir), options);
  model->eval();
  model->to(compute_device());
  return model;
}

template <typename Model>
Model load_into(const std::function<Model()>& make, const BertConfig& config,
                const std::string& dir, const LoadOptions& options) {
  return load_into(make, config, dir, options, load_weights(dir));
}

}  // namespace

void check_config_matches_weights(const BertConfig& config, const TensorMap& weights,
                                  const std::string& source) {
  auto expect = [&](const char* field, int64_t value, const std::string& tensor, int64_t dim) {
    const at::Tensor* t = find_weight(weights, tensor);
    if (!t || t->dim() <= dim) return;
    // Smaller is left to load_state, which names both shapes; larger would allocate first.
    if (value > t->size(dim))
      fail(source, ": config.json says ", field, " ", value, ", but ", tensor, " has shape ",
           t->sizes(), ": the weights hold only ", t->size(dim));
  };
  auto weight = [](const std::string& module) { return hf::path({module, "weight"}); };
  expect("vocab_size", config.vocab_size, weight(hf::kWordEmbeddings), 0);
  expect("hidden_size", config.hidden_size, weight(hf::kWordEmbeddings), 1);
  expect("max_position_embeddings", config.max_position_embeddings, weight(hf::kPositionEmbeddings),
         0);
  expect("type_vocab_size", config.type_vocab_size, weight(hf::kTokenTypeEmbeddings), 0);
  expect("intermediate_size", config.intermediate_size,
         weight(hf::path({hf::layer(0), hf::kIntermediate})), 0);
  expect("num_labels", config.num_labels(), weight(hf::kClassifier), 0);
  // Layers: the highest encoder layer index in the file.
  int64_t layers = 0;
  for (const auto& [name, tensor] : weights)
    if (auto p = hf::parse_layer_parameter(name)) layers = std::max(layers, p->layer + 1);
  if (layers > 0 && config.num_hidden_layers > layers)
    fail(source, ": config.json says num_hidden_layers ", config.num_hidden_layers,
         ", but the weights hold only ", layers, " layers");
}

BertModel load_bert_model(const std::string& dir, bool with_pooler, const LoadOptions& options) {
  const BertConfig config = load_config_dir(dir);
  return load_into<BertModel>([&] { return BertModel(config, with_pooler); }, config, dir, options);
}

BertModel load_encoder(const std::string& dir) {
  const BertConfig config = load_config_dir(dir);
  const TensorMap weights = load_weights(dir);
  const bool pooler = find_weight(weights, hf::path({hf::kPooler, "weight"})) != nullptr;
  return load_into<BertModel>([&] { return BertModel(config, pooler); }, config, dir, {}, weights);
}

BertForMaskedLM load_masked_lm(const std::string& dir, const LoadOptions& options) {
  const BertConfig config = load_config_dir(dir);
  return load_into<BertForMaskedLM>([&] { return BertForMaskedLM(config); }, config, dir, options);
}

BertForSequenceClassification load_classifier(const std::string& dir, const LoadOptions& options) {
  const BertConfig config = load_config_dir(dir);
  return load_into<BertForSequenceClassification>(
      [&] { return BertForSequenceClassification(config); }, config, dir, options);
}

}  // namespace slimbert
