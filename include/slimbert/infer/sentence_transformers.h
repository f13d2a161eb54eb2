// sentence-transformers model directories: what their module files say about how a sentence
// vector is made (pooling, normalisation, length, prompts). `embed` and `serve` take these as
// their defaults, as sentence-transformers' own encode() and text-embeddings-inference do.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "slimbert/infer/run.h"

namespace slimbert::infer {

// Where pooling starts for a text put after `prompt` (Encoding::pool_from): with include_prompt
// false, sentence-transformers' prompt_length (the prompt's tokens and the special token before
// them), else 0.
int64_t prompt_pool_from(const Tokenizer& tokenizer, const std::string& prompt,
                         bool include_prompt);

struct SentenceTransformer {
  bool present = false;                        // DIR/modules.json exists
  std::optional<Pooling> pooling;              // the Pooling module's mode
  bool include_prompt = true;                  // the Pooling module pools the prompt's tokens too
  bool normalize = false;                      // a Normalize module follows the pooling
  std::optional<int64_t> max_seq_length;       // sentence_bert_config.json
  std::map<std::string, std::string> prompts;  // config_sentence_transformers.json
  std::optional<std::string> default_prompt_name;
};

// Reads DIR's modules.json (and the files its modules name), sentence_bert_config.json and
// config_sentence_transformers.json, each when present. A module slimbert cannot reproduce (a
// Dense layer, a pooling mode other than one of cls, mean, max and lasttoken, or several at
// once) is an error naming the file and what it holds.
SentenceTransformer read_sentence_transformer(const std::string& dir);

// Copies DIR's sentence-transformers files (modules.json, the module folders it names,
// sentence_bert_config.json, config_sentence_transformers.json) into `to`: a model derived from
// DIR's weights (rewired, distilled, sliced) pools and prompts as DIR does. Nothing when DIR has
// none; a module path outside DIR is an error.
void copy_sentence_transformer_files(const std::string& dir, const std::string& to);

}  // namespace slimbert::infer
