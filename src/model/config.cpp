#include "slimbert/model/config.h"

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/model/family.h"

namespace slimbert {
namespace {

using json = nlohmann::json;

// Sizes in a config.json decide allocations before any weight is read, so each is bounded: far
// above any BERT, far below what would exhaust memory. The loaders then check that the weights
// back these sizes (check_config_matches_weights).
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxHidden = int64_t{1} << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxIntermediate = int64_t{1} << 18;
constexpr int64_t kMaxPositions = int64_t{1} << 20;
constexpr int64_t kMaxTypeVocab = int64_t{1} << 16;
// num_labels without id2label names labels that nothing in the file backs.
constexpr int64_t kMaxUnnamedLabels = int64_t{1} << 16;

// Reads typed fields with errors that name the file and the field.
struct Reader {
  const json& j;
  const std::string& source;
  std::set<std::string> seen;

  const json* get(const char* key) {
    seen.insert(key);
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void bad(const char* key, const std::string& expected, const json& got) {
    fail(source, ": field '", key, "': expected ", expected, ", got ", excerpt(json_text(got)));
  }
  void positive(const char* key, int64_t& out, int64_t max) {
    if (const json* v = get(key)) {
      if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > INT64_MAX) ||
          v->get<int64_t>() <= 0 || v->get<int64_t>() > max)
        bad(key, cat("a positive integer of at most ", max), *v);
      out = v->get<int64_t>();
    }
  }
  void integer(const char* key, int64_t& out) {
    if (const json* v = get(key)) {
      if (!v->is_number_integer()) bad(key, "an integer", *v);
      out = v->get<int64_t>();
    }
  }
  void number(const char* key, double& out) {
    if (const json* v = get(key)) {
      if (!v->is_number()) bad(key, "a number", *v);
      out = v->get<double>();
    }
  }
  void string(const char* key, std::string& out) {
    if (const json* v = get(key)) {
      if (!v->is_string()) bad(key, "a string", *v);
      out = v->get<std::string>();
    }
  }
  int64_t parse_int_key(const char* field, const std::string& key) {
    try {
      size_t used = 0;
      int64_t v = std::stoll(key, &used);
      if (used == key.size()) return v;
    } catch (const std::exception&) {
    }
    fail(source, ": field '", field, "': key '", key, "' is not an integer");
  }
};

}  // namespace

BertConfig BertConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, ": expected a JSON object");
  BertConfig c;
  Reader r{j, source, {}};
  r.positive("vocab_size", c.vocab_size, kMaxVocab);
  r.positive("hidden_size", c.hidden_size, kMaxHidden);
  r.positive("num_hidden_layers", c.num_hidden_layers, kMaxLayers);
  r.positive("num_attention_heads", c.num_attention_heads, kMaxHidden);
  r.positive("intermediate_size", c.intermediate_size, kMaxIntermediate);
  r.string("hidden_act", c.hidden_act);
  r.number("hidden_dropout_prob", c.hidden_dropout_prob);
  r.number("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  if (const json* v = r.get("classifier_dropout")) {
    if (!v->is_number()) r.bad("classifier_dropout", "a number or null", *v);
    c.classifier_dropout = v->get<double>();
  }
  r.positive("max_position_embeddings", c.max_position_embeddings, kMaxPositions);
  r.positive("type_vocab_size", c.type_vocab_size, kMaxTypeVocab);
  r.number("initializer_range", c.initializer_range);
  r.number("layer_norm_eps", c.layer_norm_eps);
  r.integer("pad_token_id", c.pad_token_id);
  r.string("position_embedding_type", c.position_embedding_type);
  r.string("problem_type", c.problem_type);
  r.string("model_type", c.model_type);
  if (r.get("attention_head_size")) {
    int64_t size = 0;
    r.positive("attention_head_size", size, kMaxHidden);
    c.attention_head_size_override = size;
  }
  if (const json* v = r.get("architectures")) {
    if (!v->is_array()) r.bad("architectures", "a list of strings", *v);
    for (const auto& a : *v) {
      if (!a.is_string()) r.bad("architectures", "a list of strings", *v);
      c.architectures.push_back(a.get<std::string>());
    }
  }
  if (const json* v = r.get("pruned_heads")) {
    if (!v->is_object()) r.bad("pruned_heads", "an object {layer: [heads]}", *v);
    for (auto it = v->begin(); it != v->end(); ++it) {
      int64_t layer = r.parse_int_key("pruned_heads", it.key());
      if (!it.value().is_array()) r.bad("pruned_heads", "an object {layer: [heads]}", *v);
      for (const auto& h : it.value()) {
        if (!h.is_number_integer()) r.bad("pruned_heads", "integer head indices", it.value());
        c.pruned_heads[layer].insert(h.get<int64_t>());
      }
    }
  }
  if (const json* v = r.get("id2label")) {
    if (!v->is_object()) r.bad("id2label", "an object {id: name}", *v);
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (!it.value().is_string()) r.bad("id2label", "string label names", it.value());
      c.id2label[r.parse_int_key("id2label", it.key())] = it.value().get<std::string>();
    }
  }
  if (const json* v = r.get("label2id")) {  // checked for consistency, derived on save
    if (!v->is_object()) r.bad("label2id", "an object {name: id}", *v);
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (!it.value().is_number_integer()) r.bad("label2id", "integer ids", it.value());
      auto found = c.id2label.find(it.value().get<int64_t>());
      if (found == c.id2label.end() || found->second != it.key())
        fail(source, ": label2id[", json_quoted(it.key()), "] = ", json_text(it.value()),
             " does not match id2label");
    }
  }
  if (r.get("num_labels")) {  // HF derives num_labels from id2label
    int64_t n = 0;
    r.positive("num_labels", n, c.id2label.empty() ? kMaxUnnamedLabels : INT64_MAX);
    if (c.id2label.empty()) c.set_num_labels(n);
  }
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!r.seen.count(it.key())) c.extra[it.key()] = it.value();
  c.validate(source);
  return c;
}

BertConfig BertConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

void BertConfig::validate(const std::string& source) const {
  family_of(model_type, source);  // bert, roberta or xlm-roberta
  static const std::set<std::string> kActs = {"gelu", "gelu_new", "gelu_pytorch_tanh",
                                              "relu", "silu",     "swish"};
  if (!kActs.count(hidden_act))
    fail(source, ": field 'hidden_act': '", hidden_act,
         "' is not supported (expected gelu, gelu_new, gelu_pytorch_tanh, relu, silu)");
  if (position_embedding_type != "absolute")
    fail(source, ": field 'position_embedding_type': only 'absolute' is supported, got '",
         position_embedding_type, "'");
  if (!attention_head_size_override && hidden_size % num_attention_heads != 0)
    fail(source, ": hidden_size ", hidden_size, " is not a multiple of num_attention_heads ",
         num_attention_heads);
  if (attention_head_size_override &&
      num_attention_heads * *attention_head_size_override > kMaxHidden)
    fail(source, ": ", num_attention_heads, " attention heads of ", *attention_head_size_override,
         " exceed ", kMaxHidden, " attention dimensions");
  for (const auto& [layer, heads] : pruned_heads) {
    if (layer < 0 || layer >= num_hidden_layers)
      fail(source, ": pruned_heads: layer ", layer, " out of range [0, ", num_hidden_layers, ")");
    for (int64_t h : heads)
      if (h < 0 || h >= num_attention_heads)
        fail(source, ": pruned_heads[", layer, "]: head ", h, " out of range [0, ",
             num_attention_heads, ")");
  }
  for (const auto& [id, name] : id2label)
    if (id < 0 || id >= static_cast<int64_t>(id2label.size()))
      fail(source, ": id2label: ids must be 0..", id2label.size() - 1, ", got ", id);
  static const std::set<std::string> kProblems = {"", "regression", "single_label_classification",
                                                  "multi_label_classification"};
  if (!kProblems.count(problem_type))
    fail(source, ": field 'problem_type': '", problem_type, "' is not a known problem type");
  if (layer_norm_eps <= 0) fail(source, ": field 'layer_norm_eps' must be positive");
}

json BertConfig::to_json() const {
  json j;  // keys sorted, as HF writes them
  if (!architectures.empty()) {
    // Commands name BERT's classes; each family's file names its own.
    std::vector<std::string> names;
    for (const auto& a : architectures)
      names.push_back(family_architecture(a, family_of(model_type)));
    j["architectures"] = names;
  }
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["classifier_dropout"] = classifier_dropout ? json(*classifier_dropout) : json(nullptr);
  j["hidden_act"] = hidden_act;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["hidden_size"] = hidden_size;
  if (attention_head_size_override) j["attention_head_size"] = *attention_head_size_override;
  if (!id2label.empty()) {
    json id2 = json::object(), l2i = json::object();
    for (const auto& [id, name] : id2label) {
      id2[std::to_string(id)] = name;
      l2i[name] = id;
    }
    j["id2label"] = id2;
    j["label2id"] = l2i;
  }
  j["initializer_range"] = initializer_range;
  j["intermediate_size"] = intermediate_size;
  j["layer_norm_eps"] = layer_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["model_type"] = model_type;
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["pad_token_id"] = pad_token_id;
  j["position_embedding_type"] = position_embedding_type;
  if (!problem_type.empty()) j["problem_type"] = problem_type;
  if (!pruned_heads.empty()) {
    json p = json::object();
    for (const auto& [layer, heads] : pruned_heads)
      p[std::to_string(layer)] = std::vector<int64_t>(heads.begin(), heads.end());
    j["pruned_heads"] = p;
  }
  j["type_vocab_size"] = type_vocab_size;
  j["vocab_size"] = vocab_size;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void BertConfig::save(const std::string& path) const {
  write_file_atomic(path, to_json().dump(2) + "\n");
}

int64_t BertConfig::attention_head_size() const {
  return attention_head_size_override ? *attention_head_size_override
                                      : hidden_size / num_attention_heads;
}

int64_t BertConfig::heads_in_layer(int64_t layer) const {
  auto it = pruned_heads.find(layer);
  return num_attention_heads -
         (it == pruned_heads.end() ? 0 : static_cast<int64_t>(it->second.size()));
}

std::string BertConfig::label_name(int64_t id) const {
  auto it = id2label.find(id);
  return it == id2label.end() ? "LABEL_" + std::to_string(id) : it->second;
}

bool BertConfig::is_sigmoid_cross_encoder() const {
  if (num_labels() != 1) return false;
  auto sigmoid = [](const json& v) {
    return v.is_string() && v.get<std::string>().find("Sigmoid") != std::string::npos;
  };
  if (extra.contains("sbert_ce_default_activation_function") &&
      sigmoid(extra["sbert_ce_default_activation_function"]))
    return true;
  return extra.contains("sentence_transformers") && extra["sentence_transformers"].is_object() &&
         extra["sentence_transformers"].contains("activation_fn") &&
         sigmoid(extra["sentence_transformers"]["activation_fn"]);
}

int64_t BertConfig::max_sequence_length() const {
  const auto pad = position_padding_idx(*this);
  return max_position_embeddings - (pad ? *pad + 1 : 0);
}

void BertConfig::set_num_labels(int64_t n) {
  id2label.clear();
  for (int64_t i = 0; i < n; ++i) id2label[i] = "LABEL_" + std::to_string(i);
}

BertConfig BertConfig::preset(const std::string& name) {
  struct Shape {
    const char* name;
    int64_t layers, hidden, heads, ffn;
  };
  static const Shape kShapes[] = {{"tiny", 2, 128, 2, 512},
                                  {"mini", 4, 256, 4, 1024},
                                  {"small", 4, 512, 8, 2048},
                                  {"medium", 8, 512, 8, 2048},
                                  {"base", 12, 768, 12, 3072}};
  for (const auto& s : kShapes)
    if (name == s.name) {
      BertConfig c;
      c.num_hidden_layers = s.layers;
      c.hidden_size = s.hidden;
      c.num_attention_heads = s.heads;
      c.intermediate_size = s.ffn;
      return c;
    }
  std::string names;
  for (const auto& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
  fail("unknown preset '", name, "' (expected one of ", names, ")");
}

std::vector<std::string> BertConfig::preset_names() {
  return {"tiny", "mini", "small", "medium", "base"};
}

}  // namespace slimbert
