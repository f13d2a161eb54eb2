// HuggingFace's BERT parameter names, built in one place. The modules in model/bert.h register
// themselves under these names; code that reads or writes weights by name (WID's compactor model
// and merge, rewiring, checkpoint checks, the inference model) builds the names here.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace slimbert::hf {

// The encoder inside a model with a head (BertForMaskedLM, BertForSequenceClassification).
inline constexpr const char* kEncoder = "bert";

// Module paths inside BertModel.
inline constexpr const char* kWordEmbeddings = "embeddings.word_embeddings";
inline constexpr const char* kPositionEmbeddings = "embeddings.position_embeddings";
inline constexpr const char* kTokenTypeEmbeddings = "embeddings.token_type_embeddings";
inline constexpr const char* kEmbeddingNorm = "embeddings.LayerNorm";
inline constexpr const char* kLayers = "encoder.layer";  // followed by the layer index
inline constexpr const char* kPooler = "pooler.dense";

// Module paths inside one encoder layer.
inline constexpr const char* kQuery = "attention.self.query";
inline constexpr const char* kKey = "attention.self.key";
inline constexpr const char* kValue = "attention.self.value";
inline constexpr const char* kAttentionOutput = "attention.output.dense";
inline constexpr const char* kAttentionNorm = "attention.output.LayerNorm";
inline constexpr const char* kIntermediate = "intermediate.dense";
inline constexpr const char* kOutput = "output.dense";
inline constexpr const char* kOutputNorm = "output.LayerNorm";

// The MLM head, inside BertForMaskedLM (its decoder is tied to the word embeddings).
inline constexpr const char* kMlmTransform = "cls.predictions.transform.dense";
inline constexpr const char* kMlmNorm = "cls.predictions.transform.LayerNorm";
inline constexpr const char* kMlmBias = "cls.predictions.bias";

// The classification head, inside BertForSequenceClassification.
inline constexpr const char* kClassifier = "classifier";

// Joins module path parts with dots, skipping empty parts:
// path({"bert", layer(3), kQuery, "weight"}) = "bert.encoder.layer.3.attention.self.query.weight".
std::string path(std::initializer_list<std::string_view> parts);
// "encoder.layer.<l>": layer l's module path inside BertModel.
std::string layer(int64_t l);
// Layer l's module `module` inside a model with a head: "bert.encoder.layer.<l>.<module>".
std::string encoder_layer(int64_t l, std::string_view module);
// BertModel's module `module` inside a model with a head: "bert.<module>".
std::string encoder(std::string_view module);

// A parameter of an encoder layer: name = prefix + "encoder.layer.<layer>." + rest, prefix "" or
// "bert.", rest e.g. "attention.self.query.weight".
struct LayerParameter {
  std::string prefix;
  int64_t layer = 0;
  std::string rest;
  std::string name() const;  // the name again, for another layer index after `layer` is changed
};
// Splits `name`; nullopt when it is not inside an encoder layer (or its index is not a number of
// at most 6 digits).
std::optional<LayerParameter> parse_layer_parameter(std::string_view name);

}  // namespace slimbert::hf
