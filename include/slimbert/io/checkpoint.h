// HF save_pretrained directories: config.json, model.safetensors (or shards), vocab.txt,
// tokenizer_config.json, special_tokens_map.json. What we write, transformers loads unchanged.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert {

struct LoadOptions {
  // Missing head tensors (pooler, classifier, MLM head) keep their fresh initialisation, as
  // when fine-tuning a pretrained encoder; otherwise any missing tensor is an error.
  bool init_missing_heads = false;
  uint64_t seed = 0;  // for that initialisation
};

struct LoadReport {
  std::vector<std::string> initialized;  // missing head tensors left as initialised
  std::vector<std::string> ignored;      // file tensors of other heads / tied aliases
};

// Copies `weights` into `module`'s parameters by HF name. Accepts files saved from a base
// BertModel (no "bert." prefix) or from a head model, tied decoder aliases, and the other heads'
// tensors. Errors list every missing or unexpected tensor, and name both shapes on a mismatch.
LoadReport load_state(torch::nn::Module& module, const TensorMap& weights,
                      const std::string& source, const LoadOptions& options = {});

// Parameters under their HF names (the tied decoder is not a separate parameter).
TensorMap state_dict(const torch::nn::Module& module);

struct SaveOptions {
  DType float_dtype = DType::F32;  // F16 / BF16 halve the file
  size_t max_shard_bytes = 0;      // 0: one model.safetensors
  // Writes files of the caller's into the directory being written (e.g. a sentence-transformers
  // model's module files), before it is moved into place.
  std::function<void(const std::string& dir)> extra_files;
};

// Writes the checkpoint files into an existing directory (callers that add files of their own,
// like the trainer's state, stage a directory and call this).
void write_checkpoint_files(const std::string& dir, const BertConfig& config,
                            const torch::nn::Module& model, const Tokenizer& tokenizer,
                            const SaveOptions& options = {});

// Writes a complete checkpoint directory atomically (staged, then renamed into place).
void save_checkpoint(const std::string& dir, const BertConfig& config,
                     const torch::nn::Module& model, const Tokenizer& tokenizer,
                     const SaveOptions& options = {});

BertConfig load_config_dir(const std::string& dir);  // DIR/config.json
// Where a tokenizer meets a model, token ids are checked once: fails when the tokenizer of `dir`
// holds ids past config.json's vocab_size (they would have no embedding row). Training forwards
// then take their ids unchecked.
void check_tokenizer_fits(const Tokenizer& tokenizer, const BertConfig& config,
                          const std::string& dir);

// Fails when a size `config` gives (vocabulary, hidden size, positions, token types, layers, FFN
// width, labels) exceeds that of the tensors in `weights` (read from `source`) that carry it: a
// config must not size an allocation its weights do not back. Smaller sizes and absent tensors
// are left to load_state, which names both shapes and every missing or unexpected tensor.
void check_config_matches_weights(const BertConfig& config, const TensorMap& weights,
                                  const std::string& source);
// DIR/model.safetensors, or the shard index: the file to name in messages about the weights.
std::string weights_path(const std::string& dir);

// Loaders: config + weights of DIR; heads missing from the file are an error unless allowed.
BertModel load_bert_model(const std::string& dir, bool with_pooler = false,
                          const LoadOptions& options = {});
// The base model of DIR (any head's tensors ignored), with its pooler when the file has one so
// that what is saved from it keeps it.
BertModel load_encoder(const std::string& dir);
BertForMaskedLM load_masked_lm(const std::string& dir, const LoadOptions& options = {});
BertForSequenceClassification load_classifier(const std::string& dir,
                                              const LoadOptions& options = {});

}  // namespace slimbert
