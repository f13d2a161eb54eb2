// The encoder families slimbert reads and writes: BERT, RoBERTa and XLM-RoBERTa. They share one
// architecture; what differs is kept here, in one place:
//  - HF parameter names: slimbert's modules use BERT's names; RoBERTa's are translated where
//    weights are read from and written to files ("roberta." for "bert.", "lm_head" for
//    "cls.predictions", RobertaClassificationHead's "classifier.dense" / "classifier.out_proj"
//    for BERT's pooler and classifier, which compute the same function of the first token);
//  - position ids: RoBERTa counts positions over non-padding tokens from padding_idx + 1;
//  - config defaults (one token type, pad id 1, 2 extra positions, LayerNorm eps 1e-5) and the
//    architectures' class names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace slimbert {

struct BertConfig;

enum class Family { kBert, kRoberta, kXlmRoberta };

// From config.json's model_type; an unsupported one is an error naming it.
Family family_of(const std::string& model_type, const std::string& source = "config.json");
Family family_of(const BertConfig& config);
const char* model_type_of(Family family);  // "bert", "roberta", "xlm-roberta"
std::vector<std::string> model_type_names();
// RoBERTa's position rule (positions from padding_idx + 1 over non-padding tokens).
bool counts_positions_from_padding(Family family);
// The padding_idx positions count from, for a family that does; nullopt for BERT (0, 1, ...).
std::optional<int64_t> position_padding_idx(const BertConfig& config);

// A parameter name as the family's HF classes name it, from slimbert's (BERT's) name;
// `classifier` says whether the model has a sequence-classification head (then BERT's pooler is
// RoBERTa's classifier.dense).
std::string to_family_name(const std::string& name, Family family, bool classifier);
// slimbert's name of a family parameter; nullopt for tied aliases that carry nothing of their own
// (lm_head.decoder.*) and for RoBERTa's unused pooler beside a classification head.
std::optional<std::string> from_family_name(const std::string& name, Family family,
                                            bool classifier);
// "BertForSequenceClassification" -> the family's class of the same head.
std::string family_architecture(const std::string& bert_architecture, Family family);

// Sets what a fresh model of the family has: token types, padding id, extra positions, eps.
void apply_family_defaults(BertConfig& config, Family family, int64_t pad_token_id);

}  // namespace slimbert
