// The tokenizer every command uses. From a vocab.txt it is HF BertTokenizer (the pure-Python
// "slow" tokenizer of transformers 4.31), re-implemented: special-token literals, BasicTokenizer
// (cleaning, CJK isolation, lower-casing, accent stripping, punctuation splitting) and greedy
// longest-match-first WordPiece. From a tokenizer.json it runs HF tokenizers' pipeline
// (text/tokenizer_json.h): WordPiece, byte-level BPE, Unigram and the rest.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace slimbert {

class Vocab {
 public:
  static Vocab load(const std::string& path);  // vocab.txt: one token per line, id = line number
  static Vocab from_tokens(std::vector<std::string> tokens);
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  std::optional<int64_t> find(const std::string& token) const;
  const std::string& token(int64_t id) const;
  const std::vector<std::string>& tokens() const { return tokens_; }

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
};

struct TokenizerOptions {
  bool do_lower_case = true;
  std::optional<bool> strip_accents;  // unset: follows do_lower_case
  bool tokenize_chinese_chars = true;
  int64_t model_max_length = 512;
  int max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]", sep_token = "[SEP]", pad_token = "[PAD]", cls_token = "[CLS]",
              mask_token = "[MASK]";
  std::string tokenizer_class = "BertTokenizer";

  static TokenizerOptions from_json_file(const std::string& path);  // tokenizer_config.json
  std::string to_json() const;                                      // tokenizer_config.json
};

enum class Truncation { kNone, kLongestFirst, kOnlyFirst, kOnlySecond };
enum class Padding { kNone, kLongest, kMaxLength };
// Which end of a sequence truncation removes tokens from.
enum class TruncationSide { kRight, kLeft };

// longest_first | only_first | only_second | none
Truncation parse_truncation(const std::string& name);

struct Encoding {
  std::vector<std::string> tokens;
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  std::vector<int64_t> attention_mask;
  int64_t num_truncated = 0;  // tokens removed by truncation
  // Pooling leaves out the positions before this one (a sentence-transformers prompt that its
  // Pooling module excludes: include_prompt false).
  int64_t pool_from = 0;
};

// A word of the basic tokenizer (lower-cased and accent-stripped as configured) and its pieces.
struct Word {
  std::string text;
  std::vector<std::string> pieces;
};

// One token of a text with where it came from: `bytes` is its [start, stop) byte range in the
// text, unset for the special tokens the encoder adds.
struct TokenSpan {
  int64_t id = 0;
  std::string token;
  bool special = false;
  std::optional<std::pair<size_t, size_t>> bytes;
};

struct EncodeOptions {
  std::optional<int64_t>
      max_length;  // with truncation: at most this many ids; with kMaxLength padding: pad to it
  Truncation truncation = Truncation::kLongestFirst;
  TruncationSide side = TruncationSide::kRight;
  Padding padding = Padding::kNone;
  bool add_special_tokens = true;
};

class HfTokenizer;

class Tokenizer {
 public:
  Tokenizer(Vocab vocab, TokenizerOptions options);
  // A tokenizer.json pipeline. The special tokens are those `options` names where the vocabulary
  // has them, else the post-processor's and the usual names of each family.
  static Tokenizer from_hf(std::shared_ptr<const HfTokenizer> hf, TokenizerOptions options);
  // Reads DIR/tokenizer.json where there is one, else DIR/vocab.txt; and (optional)
  // DIR/tokenizer_config.json.
  static Tokenizer from_dir(const std::string& dir);
  // Whether `dir` holds tokenizer files from_dir reads.
  static bool found_in(const std::string& dir);
  // Reads a vocab.txt or a tokenizer.json file.
  static Tokenizer from_file(const std::string& path);
  // Writes vocab.txt or tokenizer.json, tokenizer_config.json and special_tokens_map.json.
  void save(const std::string& dir) const;
  // The tokenizer.json pipeline, or null for a vocab.txt tokenizer.
  const HfTokenizer* hf() const { return hf_.get(); }

  const Vocab& vocab() const { return vocab_; }
  const TokenizerOptions& options() const { return options_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t mask_id() const { return mask_id_; }

  // Word pieces of `text` (invalid UTF-8 is replaced, never an error).
  std::vector<std::string> tokenize(std::string_view text) const;
  // The same split, word by word: concatenating the pieces gives tokenize(text).
  std::vector<Word> words(std::string_view text) const;
  // The tokens of `text` (as encode gives them, without truncation) with their byte ranges in it.
  std::vector<TokenSpan> spans(std::string_view text, bool add_special_tokens = true) const;
  std::vector<int64_t> convert_tokens_to_ids(const std::vector<std::string>& tokens) const;

  Encoding encode(std::string_view text, const std::optional<std::string>& text_pair = std::nullopt,
                  const EncodeOptions& options = {}) const;
  // Pads every encoding (padding == kLongest or kMaxLength) so they stack into one batch.
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts,
                                     const std::vector<std::optional<std::string>>& pairs,
                                     const EncodeOptions& options) const;
  void pad(std::vector<Encoding>& batch, Padding padding, std::optional<int64_t> max_length) const;

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false,
                     bool clean_up_tokenization_spaces = true) const;

 private:
  void split(std::string_view text, std::vector<std::string>& pieces,
             std::vector<Word>* words) const;
  void basic_tokenize(std::u32string_view chunk, std::vector<std::u32string>& words) const;
  void wordpiece(const std::u32string& word, std::vector<std::string>& out) const;
  Encoding finish(Encoding enc, const EncodeOptions& options) const;  // attention mask, padding
  Encoding encode_hf(std::string_view text, const std::optional<std::string>& text_pair,
                     const EncodeOptions& options) const;

 public:
  bool is_special(const std::string& token) const;

 private:
  Vocab vocab_;
  TokenizerOptions options_;
  std::shared_ptr<const HfTokenizer> hf_;
  std::vector<std::u32string> specials_;  // literal special tokens, matched case-sensitively
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0, mask_id_ = 0;
};

}  // namespace slimbert
