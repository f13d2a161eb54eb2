#include "slimbert/text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/text/tokenizer_json.h"
#include "slimbert/text/unicode.h"

namespace slimbert {

namespace uc = unicode;

// ---------------------------------------------------------------------------------------------
// Vocab

Vocab Vocab::from_tokens(std::vector<std::string> tokens) {
  Vocab v;
  v.tokens_ = std::move(tokens);
  v.ids_.reserve(v.tokens_.size());
  // A duplicated line maps to its last id, as in HF load_vocab.
  for (size_t i = 0; i < v.tokens_.size(); ++i) v.ids_[v.tokens_[i]] = static_cast<int64_t>(i);
  return v;
}

Vocab Vocab::load(const std::string& path) {
  // Lines keep a '\r': HF strips only the '\n'.
  std::vector<std::string> tokens = split_lines(read_file(path), /*strip_cr=*/false);
  if (tokens.empty()) fail(path, ": vocabulary is empty");
  // HF reads vocab.txt as UTF-8; a token that is not would also poison every JSON written later.
  for (size_t i = 0; i < tokens.size(); ++i)
    if (!uc::is_valid_utf8(tokens[i])) fail(path, ":", i + 1, ": token is not valid UTF-8");
  return from_tokens(std::move(tokens));
}

std::optional<int64_t> Vocab::find(const std::string& token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string& Vocab::token(int64_t id) const {
  if (id < 0 || id >= size()) fail("token id ", id, " out of range [0, ", size(), ")");
  return tokens_[static_cast<size_t>(id)];
}

// ---------------------------------------------------------------------------------------------
// Options

namespace {

std::string special_content(const nlohmann::json& value, const std::string& path,
                            const std::string& key) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  fail(path, ": field '", key, "' must be a string or an object with 'content'");
}

}  // namespace

TokenizerOptions TokenizerOptions::from_json_file(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": expected a JSON object");
  TokenizerOptions o;
  auto get_bool = [&](const char* key, bool& out) {
    if (!j.contains(key) || j[key].is_null()) return;
    if (!j[key].is_boolean()) fail(path, ": field '", key, "' must be true or false");
    out = j[key].get<bool>();
  };
  get_bool("do_lower_case", o.do_lower_case);
  get_bool("tokenize_chinese_chars", o.tokenize_chinese_chars);
  if (j.contains("strip_accents") && !j["strip_accents"].is_null()) {
    if (!j["strip_accents"].is_boolean())
      fail(path, ": field 'strip_accents' must be true, false or null");
    o.strip_accents = j["strip_accents"].get<bool>();
  }
  if (j.contains("model_max_length") && !j["model_max_length"].is_null()) {
    const auto& m = j["model_max_length"];
    if (m.is_number_unsigned() || m.is_number_integer()) {
      o.model_max_length = m.get<int64_t>();
    } else if (m.is_number_float()) {  // HF writes 1e30 for "no limit"
      double v = m.get<double>();
      o.model_max_length =
          v >= 9e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(v);
    } else {
      fail(path, ": field 'model_max_length' must be a number");
    }
    if (o.model_max_length <= 0) fail(path, ": field 'model_max_length' must be positive");
  }
  const std::pair<const char*, std::string*> specials[] = {{"unk_token", &o.unk_token},
                                                           {"sep_token", &o.sep_token},
                                                           {"pad_token", &o.pad_token},
                                                           {"cls_token", &o.cls_token},
                                                           {"mask_token", &o.mask_token}};
  for (const auto& [key, dst] : specials)
    if (j.contains(key) && !j[key].is_null()) *dst = special_content(j[key], path, key);
  if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string())
    o.tokenizer_class = j["tokenizer_class"].get<std::string>();
  return o;
}

std::string TokenizerOptions::to_json() const {
  nlohmann::ordered_json j;
  j["tokenizer_class"] = tokenizer_class;
  if (tokenizer_class == "BertTokenizer") {  // the options of BertTokenizer's own constructor
    j["do_lower_case"] = do_lower_case;
    j["strip_accents"] = strip_accents ? nlohmann::ordered_json(*strip_accents) : nullptr;
    j["tokenize_chinese_chars"] = tokenize_chinese_chars;
  }
  j["model_max_length"] = model_max_length;
  j["clean_up_tokenization_spaces"] = true;
  j["unk_token"] = unk_token;
  j["sep_token"] = sep_token;
  j["pad_token"] = pad_token;
  j["cls_token"] = cls_token;
  j["mask_token"] = mask_token;
  return j.dump(2) + "\n";
}

Truncation parse_truncation(const std::string& name) {
  if (name == "longest_first") return Truncation::kLongestFirst;
  if (name == "only_first") return Truncation::kOnlyFirst;
  if (name == "only_second") return Truncation::kOnlySecond;
  if (name == "none" || name == "do_not_truncate") return Truncation::kNone;
  fail("unknown truncation '", name, "' (expected longest_first, only_first, only_second or none)");
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

Tokenizer::Tokenizer(Vocab vocab, TokenizerOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  auto require = [&](const std::string& token, int64_t& id) {
    auto found = vocab_.find(token);
    if (!found) fail("vocabulary has no special token '", token, "'");
    id = *found;
    specials_.push_back(uc::decode_utf8(token));
  };
  require(options_.unk_token, unk_id_);
  require(options_.sep_token, sep_id_);
  require(options_.pad_token, pad_id_);
  require(options_.cls_token, cls_id_);
  require(options_.mask_token, mask_id_);
  // Longest literal first, so the scan takes the longest match at each position.
  std::sort(specials_.begin(), specials_.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
}

namespace {

// RoBERTa's slow-tokenizer files (vocab.json + merges.txt, GPT-2's byte-level BPE) as the
// tokenizer.json transformers converts them to: ByteLevel pre-tokenizer without a prefix space,
// BPE, RobertaProcessing, the special tokens as added tokens (<mask> strips space on its left).
std::string roberta_tokenizer_json(const std::string& vocab_path, const std::string& merges_path) {
  const nlohmann::json vocab = read_json_file(vocab_path);
  if (!vocab.is_object()) fail(vocab_path, ": expected an object of token: id");
  nlohmann::json merges = nlohmann::json::array();
  const std::vector<std::string> lines = split_lines(read_file(merges_path), /*strip_cr=*/true);
  for (size_t i = 0; i < lines.size(); ++i)
    if (!lines[i].empty() && !(i == 0 && lines[i].rfind("#version", 0) == 0))
      merges.push_back(lines[i]);
  auto id_of = [&](const char* token) -> std::optional<int64_t> {
    if (!vocab.contains(token) || !vocab[token].is_number_integer()) return std::nullopt;
    return vocab[token].get<int64_t>();
  };
  nlohmann::json added = nlohmann::json::array();
  for (const char* t : {"<s>", "<pad>", "</s>", "<unk>", "<mask>"})
    if (auto id = id_of(t))
      added.push_back({{"id", *id},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", std::string(t) == "<mask>"},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", true}});
  const auto cls = id_of("<s>"), sep = id_of("</s>");
  if (!cls || !sep) fail(vocab_path, ": RoBERTa's vocabulary needs <s> and </s>");
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"post_processor",
       {{"type", "RobertaProcessing"},
        {"sep", {"</s>", *sep}},
        {"cls", {"<s>", *cls}},
        {"trim_offsets", true},
        {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", id_of("<unk>") ? nlohmann::json("<unk>") : nlohmann::json(nullptr)},
        {"vocab", vocab},
        {"merges", merges}}}};
  return j.dump();
}

}  // namespace

Tokenizer Tokenizer::from_hf(std::shared_ptr<const HfTokenizer> hf, TokenizerOptions options) {
  Vocab vocab = Vocab::from_tokens(hf->vocab());
  // Each special token: the configured one where the vocabulary has it, else the first the
  // vocabulary has of the post-processor's and each family's usual names.
  auto resolve = [&](std::string& token, std::vector<std::optional<std::string>> candidates) {
    candidates.insert(candidates.begin(), token);
    for (const auto& c : candidates)
      if (c && vocab.find(*c)) {
        token = *c;
        return;
      }
    token = vocab.token(0);  // a model without one (GPT-2's vocabulary has no [MASK]) still runs
  };
  resolve(options.cls_token, {hf->cls_token(), "<s>", "[CLS]", "<cls>"});
  resolve(options.sep_token, {hf->sep_token(), "</s>", "[SEP]", "<sep>"});
  resolve(options.unk_token, {hf->unk_token(), "<unk>", "[UNK]", "<|endoftext|>"});
  resolve(options.pad_token, {hf->pad() ? std::optional(hf->pad()->second) : std::nullopt, "<pad>",
                              "[PAD]", options.unk_token});
  resolve(options.mask_token, {"<mask>", "[MASK]", options.unk_token});
  if (options.tokenizer_class == "BertTokenizer" && hf->model_type() != "WordPiece")
    options.tokenizer_class = "PreTrainedTokenizerFast";
  Tokenizer t(std::move(vocab), std::move(options));
  t.hf_ = std::move(hf);
  return t;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0)
    return from_hf(HfTokenizer::load(path), TokenizerOptions{});
  return Tokenizer(Vocab::load(path), TokenizerOptions{});
}

bool Tokenizer::found_in(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  return fs::exists(d / "tokenizer.json") || fs::exists(d / "vocab.txt") ||
         (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"));
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(dir) / "vocab.txt").string();
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  TokenizerOptions options;
  if (fs::exists(config_path)) options = TokenizerOptions::from_json_file(config_path);
  if (fs::exists(json_path)) return from_hf(HfTokenizer::load(json_path), options);
  // A RoBERTa directory saved with its slow tokenizer's files only.
  const std::string bpe_vocab = (fs::path(dir) / "vocab.json").string();
  const std::string bpe_merges = (fs::path(dir) / "merges.txt").string();
  if (!fs::exists(vocab_path) && fs::exists(bpe_vocab) && fs::exists(bpe_merges))
    return from_hf(HfTokenizer::parse(roberta_tokenizer_json(bpe_vocab, bpe_merges), bpe_vocab),
                   options);
  try {
    return Tokenizer(Vocab::load(vocab_path), options);
  } catch (const InputError& e) {
    if (std::string(e.what()).rfind(vocab_path, 0) == 0) throw;
    fail(vocab_path, ": ", e.what());
  }
}

void Tokenizer::save(const std::string& dir) const {
  namespace fs = std::filesystem;
  if (hf_) {
    write_file_atomic((fs::path(dir) / "tokenizer.json").string(), hf_->json_text());
  } else {
    std::string vocab_text;
    for (const auto& t : vocab_.tokens()) vocab_text += t + "\n";
    write_file_atomic((fs::path(dir) / "vocab.txt").string(), vocab_text);
  }
  write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), options_.to_json());
  nlohmann::ordered_json map = {{"cls_token", options_.cls_token},
                                {"mask_token", options_.mask_token},
                                {"pad_token", options_.pad_token},
                                {"sep_token", options_.sep_token},
                                {"unk_token", options_.unk_token}};
  write_file_atomic((fs::path(dir) / "special_tokens_map.json").string(), map.dump(2) + "\n");
}

bool Tokenizer::is_special(const std::string& token) const {
  if (hf_) {
    const auto id = hf_->token_to_id(token);
    if (id && hf_->is_special(*id)) return true;
  }
  return token == options_.unk_token || token == options_.sep_token ||
         token == options_.pad_token || token == options_.cls_token || token == options_.mask_token;
}

void Tokenizer::basic_tokenize(std::u32string_view chunk,
                               std::vector<std::u32string>& words) const {
  // Cleaning and CJK isolation.
  std::u32string text;
  text.reserve(chunk.size());
  for (char32_t cp : chunk) {
    if (cp == 0 || cp == 0xFFFD || uc::is_bert_control(cp)) continue;
    if (uc::is_bert_whitespace(cp)) {
      text.push_back(U' ');
    } else if (options_.tokenize_chinese_chars && uc::is_cjk(cp)) {
      text.push_back(U' ');
      text.push_back(cp);
      text.push_back(U' ');
    } else {
      text.push_back(cp);
    }
  }
  text = uc::nfc(text);

  const bool strip = options_.strip_accents.value_or(options_.do_lower_case);
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && uc::is_python_space(text[i])) ++i;
    size_t j = i;
    while (j < text.size() && !uc::is_python_space(text[j])) ++j;
    if (j == i) break;
    std::u32string word = text.substr(i, j - i);
    i = j;
    if (std::find(specials_.begin(), specials_.end(), word) != specials_.end()) {
      words.push_back(std::move(word));
      continue;
    }
    if (options_.do_lower_case) {
      std::u32string lower;
      for (char32_t cp : word) uc::append_lower(lower, cp);
      word = std::move(lower);
    }
    if (strip) {
      std::u32string stripped;
      for (char32_t cp : uc::nfd(word))
        if (!uc::is_nonspacing_mark(cp)) stripped.push_back(cp);
      word = std::move(stripped);
    }
    // Every punctuation character becomes its own word.
    std::u32string current;
    for (char32_t cp : word) {
      if (uc::is_bert_punctuation(cp)) {
        if (!current.empty()) words.push_back(std::move(current));
        current.clear();
        words.push_back(std::u32string(1, cp));
      } else if (uc::is_python_space(cp)) {  // only if case mapping produced a space
        if (!current.empty()) words.push_back(std::move(current));
        current.clear();
      } else {
        current.push_back(cp);
      }
    }
    if (!current.empty()) words.push_back(std::move(current));
  }
}

void Tokenizer::wordpiece(const std::u32string& word, std::vector<std::string>& out) const {
  if (static_cast<int>(word.size()) > options_.max_input_chars_per_word) {
    out.push_back(options_.unk_token);
    return;
  }
  const size_t first = out.size();
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    std::string piece;
    bool found = false;
    while (start < end) {
      piece = (start > 0 ? "##" : "") + uc::encode_utf8(word.substr(start, end - start));
      if (vocab_.find(piece)) {
        found = true;
        break;
      }
      --end;
    }
    if (!found) {  // one unmatched position turns the whole word into [UNK]
      out.resize(first);
      out.push_back(options_.unk_token);
      return;
    }
    out.push_back(std::move(piece));
    start = end;
  }
}

std::vector<std::string> Tokenizer::tokenize(std::string_view text_utf8) const {
  if (hf_) {
    std::vector<std::string> out;
    for (auto& t :
         hf_->encode(text_utf8, std::nullopt, false, HfTruncation{0, Truncation::kNone}).tokens)
      out.push_back(std::move(t.token));
    return out;
  }
  std::vector<std::string> pieces;
  split(text_utf8, pieces, nullptr);
  return pieces;
}

std::vector<Word> Tokenizer::words(std::string_view text) const {
  if (hf_) {
    std::vector<Word> out;
    for (auto& w : hf_->words(text)) out.push_back({std::move(w.text), std::move(w.pieces)});
    return out;
  }
  std::vector<std::string> pieces;
  std::vector<Word> out;
  split(text, pieces, &out);
  return out;
}

void Tokenizer::split(std::string_view text_utf8, std::vector<std::string>& pieces,
                      std::vector<Word>* out_words) const {
  const std::u32string text = uc::decode_utf8(text_utf8);
  // Split at special-token literals (case-sensitive); lower-case the rest one code point at a
  // time, as HF's tokenize() does before splitting.
  struct Chunk {
    bool special;
    std::u32string text;
  };
  std::vector<Chunk> chunks;
  std::u32string current;
  for (size_t i = 0; i < text.size();) {
    const std::u32string* match = nullptr;
    for (const auto& s : specials_)
      if (text.compare(i, s.size(), s) == 0) {
        match = &s;
        break;
      }
    if (match) {
      chunks.push_back({false, std::move(current)});
      current.clear();
      chunks.push_back({true, *match});
      i += match->size();
      continue;
    }
    if (options_.do_lower_case)
      uc::append_lower(current, text[i]);
    else
      current.push_back(text[i]);
    ++i;
  }
  chunks.push_back({false, std::move(current)});

  // Whitespace next to a special token is dropped.
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (!chunks[k].special) continue;
    if (k > 0) {
      auto& left = chunks[k - 1].text;
      while (!left.empty() && uc::is_python_space(left.back())) left.pop_back();
    }
    if (k + 1 < chunks.size()) {
      auto& right = chunks[k + 1].text;
      size_t n = 0;
      while (n < right.size() && uc::is_python_space(right[n])) ++n;
      right.erase(0, n);
    }
  }

  std::vector<std::u32string> words;
  const auto record = [&](const std::u32string& w, size_t first_piece) {
    if (out_words)
      out_words->push_back({uc::encode_utf8(w),
                            std::vector<std::string>(pieces.begin() + first_piece, pieces.end())});
  };
  for (const auto& chunk : chunks) {
    if (chunk.text.empty()) continue;
    if (chunk.special) {
      pieces.push_back(uc::encode_utf8(chunk.text));
      record(chunk.text, pieces.size() - 1);
      continue;
    }
    words.clear();
    basic_tokenize(chunk.text, words);
    for (const auto& w : words) {
      const size_t first = pieces.size();
      if (std::find(specials_.begin(), specials_.end(), w) != specials_.end())
        pieces.push_back(uc::encode_utf8(w));
      else
        wordpiece(w, pieces);
      record(w, first);
    }
  }
}

std::vector<TokenSpan> Tokenizer::spans(std::string_view text, bool add_special_tokens) const {
  if (hf_) {
    std::vector<TokenSpan> out;
    for (auto& t :
         hf_->encode(text, std::nullopt, add_special_tokens, HfTruncation{0, Truncation::kNone})
             .tokens)
      out.push_back({t.id, std::move(t.token), t.special, t.bytes});
    return out;
  }
  // The text's characters as normalisation leaves them (lower-cased, decomposed, marks stripped
  // as configured), each with the bytes of the source character it came from. Words are matched
  // against this stream in order; decomposing both sides lets a word's composed characters (NFC)
  // match the source's combining sequences.
  struct Char {
    char32_t raw, norm;
    size_t begin, end;
  };
  const bool strip = options_.strip_accents.value_or(options_.do_lower_case);
  std::vector<Char> stream;
  size_t pos = 0;
  for (char32_t cp : uc::decode_utf8(text)) {
    const size_t len = uc::encode_utf8(std::u32string(1, cp)).size();
    std::u32string n;
    if (options_.do_lower_case)
      uc::append_lower(n, cp);
    else
      n.push_back(cp);
    for (char32_t c : uc::nfd(n))
      if (!(strip && uc::is_nonspacing_mark(c))) stream.push_back({cp, c, pos, pos + len});
    pos += len;
  }
  std::vector<TokenSpan> out;
  auto add = [&](const std::string& token, bool special,
                 std::optional<std::pair<size_t, size_t>> bytes) {
    out.push_back({vocab_.find(token).value_or(unk_id_), token, special, bytes});
  };
  if (add_special_tokens) add(options_.cls_token, true, std::nullopt);
  size_t at = 0;  // next unmatched character of the stream
  for (const Word& w : words(text)) {
    // Each character of the word -> its [first, last] characters in the stream.
    std::vector<std::pair<size_t, size_t>> chars;
    size_t k = at;
    bool matched = true;
    for (char32_t wc : uc::decode_utf8(w.text)) {
      std::optional<size_t> first;
      size_t last = 0;
      for (char32_t c : uc::nfd(std::u32string(1, wc))) {
        if (strip && uc::is_nonspacing_mark(c)) continue;
        // Skip what the tokenizer drops between words: spaces, controls, replacement characters.
        while (k < stream.size() && stream[k].norm != c && stream[k].raw != c &&
               (uc::is_python_space(stream[k].norm) || uc::is_bert_control(stream[k].raw) ||
                stream[k].raw == 0 || stream[k].raw == 0xFFFD ||
                uc::is_nonspacing_mark(stream[k].norm)))
          ++k;
        if (k == stream.size() || (stream[k].norm != c && stream[k].raw != c)) {
          matched = false;
          break;
        }
        if (!first) first = k;
        last = k++;
      }
      if (!matched) break;
      if (first) chars.push_back({*first, last});
    }
    const std::u32string word = uc::decode_utf8(w.text);
    if (!matched || chars.size() != word.size()) {
      for (const std::string& p : w.pieces) add(p, false, std::nullopt);
      continue;
    }
    at = k;
    auto bytes_of = [&](size_t from, size_t to) {  // word characters [from, to)
      return std::make_pair(stream[chars[from].first].begin, stream[chars[to - 1].second].end);
    };
    size_t c = 0;
    for (size_t i = 0; i < w.pieces.size(); ++i) {
      const std::string& p = w.pieces[i];
      const size_t n = uc::decode_utf8(p).size() - (i > 0 && p.rfind("##", 0) == 0 ? 2 : 0);
      if (w.pieces.size() == 1 || c + n > word.size()) {  // the whole word ([UNK] included)
        add(p, false, bytes_of(0, word.size()));
        c = word.size();
        continue;
      }
      add(p, false, n > 0 ? std::optional(bytes_of(c, c + n)) : std::nullopt);
      c += n;
    }
  }
  if (add_special_tokens) add(options_.sep_token, true, std::nullopt);
  return out;
}

std::vector<int64_t> Tokenizer::convert_tokens_to_ids(
    const std::vector<std::string>& tokens) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens) ids.push_back(vocab_.find(t).value_or(unk_id_));
  return ids;
}

namespace {

// Longer than any position table (config.json bounds max_position_embeddings by the same): a
// padding target beyond it is a mistake, not a request for gigabytes of padding.
constexpr int64_t kMaxSequenceTokens = int64_t{1} << 20;

void drop_one(std::vector<std::string>& tokens, TruncationSide side) {
  if (side == TruncationSide::kLeft)
    tokens.erase(tokens.begin());
  else
    tokens.pop_back();
}

void check_max_length(const std::optional<int64_t>& max_length) {
  if (max_length && (*max_length < 0 || *max_length > kMaxSequenceTokens))
    fail("max_length must be in [0, ", kMaxSequenceTokens, "], got ", *max_length);
}

}  // namespace

Encoding Tokenizer::encode(std::string_view text, const std::optional<std::string>& text_pair,
                           const EncodeOptions& options) const {
  check_max_length(options.max_length);
  if (hf_) return encode_hf(text, text_pair, options);
  std::vector<std::string> a = tokenize(text);
  std::vector<std::string> b;
  const bool pair = text_pair.has_value();
  if (pair) b = tokenize(*text_pair);

  Encoding enc;
  if (options.max_length && options.truncation != Truncation::kNone) {
    const int64_t specials = options.add_special_tokens ? (pair ? 3 : 2) : 0;
    const int64_t total = static_cast<int64_t>(a.size() + b.size()) + specials;
    int64_t remove = total - *options.max_length;
    if (remove > 0) {
      enc.num_truncated = remove;
      switch (options.truncation) {
        case Truncation::kLongestFirst:
          for (; remove > 0; --remove) {
            if (!pair || a.size() > b.size()) {
              if (!a.empty()) drop_one(a, options.side);
            } else if (!b.empty()) {
              drop_one(b, options.side);
            }
          }
          break;
        case Truncation::kOnlyFirst:
        case Truncation::kOnlySecond: {
          const bool first = options.truncation == Truncation::kOnlyFirst;
          if (!first && !pair) fail("truncation only_second needs a text pair");
          auto& seq = first ? a : b;
          if (static_cast<int64_t>(seq.size()) <= remove)
            fail("cannot truncate to max_length ", *options.max_length, " with only_",
                 first ? "first" : "second", ": the ", first ? "first" : "second", " sequence has ",
                 seq.size(), " tokens and ", remove, " must be removed");
          if (options.side == TruncationSide::kLeft)
            seq.erase(seq.begin(), seq.begin() + remove);
          else
            seq.resize(seq.size() - static_cast<size_t>(remove));
          break;
        }
        case Truncation::kNone:
          break;
      }
    }
  }

  auto push = [&](const std::string& token, int64_t type) {
    enc.tokens.push_back(token);
    enc.token_type_ids.push_back(type);
  };
  if (options.add_special_tokens) push(options_.cls_token, 0);
  for (const auto& t : a) push(t, 0);
  if (options.add_special_tokens) push(options_.sep_token, 0);
  if (pair) {
    for (const auto& t : b) push(t, 1);
    if (options.add_special_tokens) push(options_.sep_token, 1);
  }
  enc.input_ids = convert_tokens_to_ids(enc.tokens);
  return finish(std::move(enc), options);
}

Encoding Tokenizer::finish(Encoding enc, const EncodeOptions& options) const {
  enc.attention_mask.assign(enc.input_ids.size(), 1);
  if (options.padding == Padding::kMaxLength) {
    std::vector<Encoding> one{std::move(enc)};
    pad(one, options.padding, options.max_length);
    return std::move(one[0]);
  }
  return enc;
}

Encoding Tokenizer::encode_hf(std::string_view text, const std::optional<std::string>& text_pair,
                              const EncodeOptions& options) const {
  // The caller's truncation where it sets one, else the file's.
  std::optional<HfTruncation> truncation;
  if (options.truncation == Truncation::kNone)
    truncation = HfTruncation{0, Truncation::kNone, options.side};
  else if (options.max_length)
    truncation = HfTruncation{*options.max_length, options.truncation, options.side};
  HfEncoding hf = hf_->encode(text, text_pair, options.add_special_tokens, truncation);
  Encoding enc;
  enc.num_truncated = hf.num_truncated;
  for (auto& t : hf.tokens) {
    enc.tokens.push_back(std::move(t.token));
    enc.input_ids.push_back(t.id);
    enc.token_type_ids.push_back(t.type_id);
  }
  return finish(std::move(enc), options);
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              const std::vector<std::optional<std::string>>& pairs,
                                              const EncodeOptions& options) const {
  if (!pairs.empty() && pairs.size() != texts.size())
    fail("encode_batch: ", texts.size(), " texts but ", pairs.size(), " pairs");
  EncodeOptions single = options;
  single.padding = Padding::kNone;
  std::vector<Encoding> batch;
  batch.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    batch.push_back(encode(texts[i], pairs.empty() ? std::nullopt : pairs[i], single));
  pad(batch, options.padding, options.max_length);
  return batch;
}

void Tokenizer::pad(std::vector<Encoding>& batch, Padding padding,
                    std::optional<int64_t> max_length) const {
  if (padding == Padding::kNone) return;
  size_t target = 0;
  check_max_length(max_length);
  if (padding == Padding::kMaxLength) {
    if (!max_length) fail("padding max_length needs a max_length");
    target = static_cast<size_t>(*max_length);
  } else {
    for (const auto& e : batch) target = std::max(target, e.input_ids.size());
  }
  for (auto& e : batch) {
    if (e.input_ids.size() >= target) continue;
    const size_t n = target - e.input_ids.size();
    e.tokens.insert(e.tokens.end(), n, options_.pad_token);
    e.input_ids.insert(e.input_ids.end(), n, pad_id_);
    e.token_type_ids.insert(e.token_type_ids.end(), n, 0);
    e.attention_mask.insert(e.attention_mask.end(), n, 0);
  }
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens,
                              bool clean_up_tokenization_spaces) const {
  if (hf_) return hf_->decode(ids, skip_special_tokens);  // the file's decoder, as TEI's /decode
  std::string text;
  for (int64_t id : ids) {
    const std::string& token = vocab_.token(id);
    if (skip_special_tokens && is_special(token)) continue;
    if (token.rfind("##", 0) == 0 && !text.empty()) {
      text += token.substr(2);
    } else {
      if (!text.empty()) text += ' ';
      text += token;
    }
  }
  if (!clean_up_tokenization_spaces) return text;
  // HF clean_up_tokenization: undo the spaces the join put before punctuation and contractions.
  static const std::pair<const char*, const char*> kFixes[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kFixes) {
    const std::string f = from, t = to;
    for (size_t pos = text.find(f); pos != std::string::npos; pos = text.find(f, pos + t.size()))
      text.replace(pos, f.size(), t);
  }
  return text;
}

}  // namespace slimbert
