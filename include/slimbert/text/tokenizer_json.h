// HF tokenizers' pipeline read from a tokenizer.json, re-implemented: added tokens, normalizers,
// pre-tokenizers, WordPiece / BPE / Unigram / WordLevel, truncation, post-processors and
// decoders, behaving as the Rust library (the "fast" tokenizer) does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "slimbert/text/tokenizer.h"

namespace slimbert {

struct HfTruncation {
  int64_t max_length = 512;
  Truncation strategy = Truncation::kLongestFirst;
  TruncationSide side = TruncationSide::kRight;
};

struct HfAddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// One token of an encoding. `bytes` is its [begin, end) byte range in the text it came from (the
// first or the second of a pair, `sequence`), unset for the tokens the post-processor adds.
struct HfToken {
  int64_t id = 0;
  std::string token;
  int64_t type_id = 0;
  bool special = false;
  int sequence = 0;
  std::optional<std::pair<size_t, size_t>> bytes;
};

struct HfEncoding {
  std::vector<HfToken> tokens;
  int64_t num_truncated = 0;  // tokens truncation removed
};

// A pre-tokenized word (normalized text) and the tokens the model made of it.
struct HfWord {
  std::string text;
  std::vector<std::string> pieces;
};

class HfTokenizer {
 public:
  // Parses tokenizer.json text; `source` names it in errors. A component slimbert does not
  // implement is an error naming it.
  static std::shared_ptr<const HfTokenizer> parse(const std::string& text,
                                                  const std::string& source);
  static std::shared_ptr<const HfTokenizer> load(const std::string& path);
  ~HfTokenizer();

  // `truncation` replaces the file's own (nullopt: the file's, if any). Truncation takes the
  // tokens the post-processor adds into account, as the library does.
  HfEncoding encode(std::string_view text, const std::optional<std::string>& pair,
                    bool add_special_tokens, const std::optional<HfTruncation>& truncation) const;
  // Tokens of `text` without specials and without truncation, word by word.
  std::vector<HfWord> words(std::string_view text) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  // id -> token over the model's vocabulary and the added tokens ("" where an id has neither).
  const std::vector<std::string>& vocab() const;
  std::optional<int64_t> token_to_id(const std::string& token) const;
  const std::vector<HfAddedToken>& added_tokens() const;
  bool is_special(int64_t id) const;
  // Tokens the post-processor adds to one sequence or a pair.
  int64_t num_special_tokens(bool pair) const;
  // The post-processor's [CLS]-like and [SEP]-like tokens, where it names them.
  std::optional<std::string> cls_token() const;
  std::optional<std::string> sep_token() const;
  std::optional<std::string> unk_token() const;  // the model's
  const std::optional<HfTruncation>& truncation() const;
  std::optional<std::pair<int64_t, std::string>> pad() const;  // the file's padding id and token
  std::string model_type() const;                              // WordPiece, BPE, Unigram, ...
  const std::string& json_text() const;

  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimbert
