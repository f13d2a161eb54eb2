#include "slimbert/model/family.h"

#include "slimbert/core/error.h"
#include "slimbert/model/config.h"

namespace slimbert {

namespace {

struct Rename {
  const char* bert;
  const char* roberta;
};

// Head modules, BERT's name -> RoBERTa's (prefix match on whole path components).
constexpr Rename kMlm[] = {{"cls.predictions.transform.dense.", "lm_head.dense."},
                           {"cls.predictions.transform.LayerNorm.", "lm_head.layer_norm."},
                           {"cls.predictions.bias", "lm_head.bias"}};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

Family family_of(const std::string& model_type, const std::string& source) {
  if (model_type == "bert") return Family::kBert;
  if (model_type == "roberta") return Family::kRoberta;
  if (model_type == "xlm-roberta") return Family::kXlmRoberta;
  fail(source, ": model_type '", model_type,
       "' is not supported (expected bert, roberta or xlm-roberta)");
}

Family family_of(const BertConfig& config) {
  return family_of(config.model_type);
}

const char* model_type_of(Family family) {
  switch (family) {
    case Family::kRoberta:
      return "roberta";
    case Family::kXlmRoberta:
      return "xlm-roberta";
    case Family::kBert:
      break;
  }
  return "bert";
}

std::vector<std::string> model_type_names() {
  return {"bert", "roberta", "xlm-roberta"};
}

bool counts_positions_from_padding(Family family) {
  return family != Family::kBert;
}

std::optional<int64_t> position_padding_idx(const BertConfig& config) {
  if (!counts_positions_from_padding(family_of(config))) return std::nullopt;
  return config.pad_token_id;
}

std::string to_family_name(const std::string& name, Family family, bool classifier) {
  if (family == Family::kBert) return name;
  for (const auto& r : kMlm)
    if (starts_with(name, r.bert)) return r.roberta + name.substr(std::string(r.bert).size());
  for (const char* prefix : {"bert.pooler.dense.", "pooler.dense."})
    if (starts_with(name, prefix)) {
      const std::string rest = name.substr(std::string(prefix).size());
      if (classifier) return "classifier.dense." + rest;
      return (starts_with(name, "bert.") ? "roberta.pooler.dense." : "pooler.dense.") + rest;
    }
  if (starts_with(name, "classifier.")) return "classifier.out_proj." + name.substr(11);
  if (starts_with(name, "bert.")) return "roberta." + name.substr(5);
  return name;
}

std::optional<std::string> from_family_name(const std::string& name, Family family,
                                            bool classifier) {
  if (family == Family::kBert) return name;
  if (starts_with(name, "lm_head.decoder.")) return std::nullopt;  // tied to embeddings and bias
  for (const auto& r : kMlm)
    if (starts_with(name, r.roberta)) return r.bert + name.substr(std::string(r.roberta).size());
  if (starts_with(name, "classifier.dense.")) return "bert.pooler.dense." + name.substr(17);
  if (starts_with(name, "classifier.out_proj.")) return "classifier." + name.substr(20);
  if (starts_with(name, "roberta.pooler.dense."))
    return classifier ? std::nullopt : std::optional<std::string>("bert." + name.substr(8));
  if (starts_with(name, "roberta.")) return "bert." + name.substr(8);
  return name;
}

std::string family_architecture(const std::string& bert_architecture, Family family) {
  if (family == Family::kBert || !starts_with(bert_architecture, "Bert")) return bert_architecture;
  return (family == Family::kRoberta ? "Roberta" : "XLMRoberta") + bert_architecture.substr(4);
}

void apply_family_defaults(BertConfig& config, Family family, int64_t pad_token_id) {
  config.model_type = model_type_of(family);
  if (family == Family::kBert) return;
  config.type_vocab_size = 1;
  config.pad_token_id = pad_token_id;
  config.max_position_embeddings += pad_token_id + 1;  // positions start after padding_idx
  config.layer_norm_eps = 1e-5;
  config.extra["bos_token_id"] = 0;
  config.extra["eos_token_id"] = 2;
}

}  // namespace slimbert
