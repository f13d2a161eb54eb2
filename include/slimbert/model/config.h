// BertConfig: the HF config.json fields, plus the per-layer shapes they imply. Pruned and
// compressed models (WID students, DynaBERT sub-networks) are ordinary configs.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slimbert {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;  // heads per layer before pruning
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu (erf) | gelu_new / gelu_pytorch_tanh | relu | silu
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  std::optional<double> classifier_dropout;  // null: use hidden_dropout_prob
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::string position_embedding_type = "absolute";
  std::map<int64_t, std::set<int64_t>> pruned_heads;  // layer -> removed head indices
  std::map<int64_t, std::string> id2label;            // empty: HF's default of 2 labels
  std::string
      problem_type;  // "", regression, single_label_classification, multi_label_classification
  std::vector<std::string> architectures;
  std::string model_type = "bert";
  // slimbert extension (absent in standard BERT): attention head size when it is not
  // hidden_size / num_attention_heads, e.g. for WID students compressed per dimension.
  std::optional<int64_t> attention_head_size_override;
  // Keys this struct does not model, kept so that saving preserves them.
  nlohmann::json extra = nlohmann::json::object();

  static BertConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  static BertConfig load(const std::string& path);
  nlohmann::json to_json() const;
  void save(const std::string& path) const;  // atomic
  void validate(const std::string& source = "config") const;

  int64_t attention_head_size() const;
  // The longest input: max_position_embeddings, less RoBERTa's positions up to padding_idx.
  int64_t max_sequence_length() const;
  int64_t heads_in_layer(int64_t layer) const;  // after pruned_heads
  int64_t num_labels() const {
    return id2label.empty() ? 2 : static_cast<int64_t>(id2label.size());
  }
  // A classification head with one output is a regressor (HF infers the same).
  bool is_regression() const { return problem_type == "regression" || num_labels() == 1; }
  // A sentence-transformers CrossEncoder (a reranker): one output read through the sigmoid its
  // config.json names (sentence_transformers.activation_fn, or the older
  // sbert_ce_default_activation_function).
  bool is_sigmoid_cross_encoder() const;
  std::string label_name(int64_t id) const;
  void set_num_labels(int64_t n);  // LABEL_0..LABEL_{n-1}

  // Named shapes: tiny, mini (L4/H256/A4/I1024), small, medium, base (BERT-base).
  static BertConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();
};

}  // namespace slimbert
