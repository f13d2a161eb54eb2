// TinyBERT-style data augmentation (ALGORITHMS.md §B.8) with masked-LM candidates only.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/data/mlm.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/text/unicode.h"
#include "slimbert/train/progress.h"

namespace fs = std::filesystem;

namespace slimbert {

namespace {

// English function words, never replaced (the role of TinyBERT's stop-word list).
const std::unordered_set<std::string>& stop_words() {
  static const std::unordered_set<std::string> words = {
      "a",      "about",  "above", "after",  "again",    "against",    "all",  "am",
      "an",     "and",    "any",   "are",    "as",       "at",         "be",   "because",
      "been",   "before", "being", "below",  "between",  "both",       "but",  "by",
      "can",    "could",  "did",   "do",     "does",     "doing",      "down", "during",
      "each",   "few",    "for",   "from",   "further",  "had",        "has",  "have",
      "having", "he",     "her",   "here",   "hers",     "herself",    "him",  "himself",
      "his",    "how",    "i",     "if",     "in",       "into",       "is",   "it",
      "its",    "itself", "just",  "me",     "more",     "most",       "my",   "myself",
      "no",     "nor",    "not",   "now",    "of",       "off",        "on",   "once",
      "only",   "or",     "other", "our",    "ours",     "ourselves",  "out",  "over",
      "own",    "same",   "she",   "should", "so",       "some",       "such", "than",
      "that",   "the",    "their", "theirs", "them",     "themselves", "then", "there",
      "these",  "they",   "this",  "those",  "through",  "to",         "too",  "under",
      "until",  "up",     "very",  "was",    "we",       "were",       "what", "when",
      "where",  "which",  "while", "who",    "whom",     "why",        "will", "with",
      "would",  "you",    "your",  "yours",  "yourself", "yourselves", "s",    "t",
      "d",      "ll",     "m",     "o",      "re",       "ve",         "y",    "shall",
      "may",    "might",  "must",  "also",   "yet",      "thus",       "upon", "unto",
  };
  return words;
}

// A content word: letters only, not a stop word. Only such words are replaced, and only by such
// words (a weak MLM otherwise proposes punctuation and "the" everywhere); this also keeps out
// "##" continuations and "[SEP]"-like vocabulary entries.
bool is_content_word(const std::string& text) {
  std::string lower = text;  // cased vocabularies: "The" is a stop word too
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (stop_words().count(lower)) return false;
  const std::u32string cps = unicode::decode_utf8(text);
  return !cps.empty() && std::all_of(cps.begin(), cps.end(), unicode::is_letter);
}

bool is_candidate_word(const Word& w) {
  return w.pieces.size() == 1 && is_content_word(w.text);
}

}  // namespace

std::vector<std::vector<std::string>> word_candidates(const BertForMaskedLM& mlm,
                                                      const Tokenizer& tokenizer,
                                                      const std::vector<Word>& words,
                                                      int64_t candidates, int64_t max_length,
                                                      int64_t batch_size) {
  if (max_length < 5) fail("augment: --max-length ", max_length, " is too short (at least 5)");
  std::vector<std::vector<std::string>> out(words.size());
  std::vector<std::string> pieces;
  std::vector<size_t> word_at_piece;  // piece index of each candidate word
  std::vector<size_t> masked_words;
  for (size_t i = 0; i < words.size(); ++i) {
    if (is_candidate_word(words[i])) {
      masked_words.push_back(i);
      word_at_piece.push_back(pieces.size());
    }
    pieces.insert(pieces.end(), words[i].pieces.begin(), words[i].pieces.end());
  }
  if (masked_words.empty()) return out;
  const std::vector<int64_t> ids = tokenizer.convert_tokens_to_ids(pieces);
  const int64_t total = static_cast<int64_t>(ids.size());
  const int64_t window = std::min(total, (max_length - 3) / 2);
  const int64_t len = 2 * window + 3;
  // The window twice, as a pair: token types 0 then 1 (a family with one token type, RoBERTa's,
  // reads both as 0).
  std::vector<int64_t> types(static_cast<size_t>(len),
                             mlm->bert->config().type_vocab_size > 1 ? 1 : 0);
  std::fill(types.begin(), types.begin() + window + 2, 0);
  const auto& vocab = tokenizer.vocab();

  torch::NoGradGuard no_grad;
  for (size_t begin = 0; begin < masked_words.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(masked_words.size(), begin + static_cast<size_t>(batch_size));
    const int64_t rows = static_cast<int64_t>(end - begin);
    std::vector<int64_t> input(static_cast<size_t>(rows * len)), masked_pos;
    for (size_t r = 0; r < end - begin; ++r) {
      const int64_t at = static_cast<int64_t>(word_at_piece[begin + r]);
      const int64_t start = std::clamp<int64_t>(at - window / 2, 0, total - window);
      int64_t* row = input.data() + r * static_cast<size_t>(len);
      row[0] = tokenizer.cls_id();
      for (int64_t k = 0; k < window; ++k) {
        row[1 + k] = ids[static_cast<size_t>(start + k)];
        row[window + 2 + k] = ids[static_cast<size_t>(start + k)];
      }
      row[window + 1] = row[2 * window + 2] = tokenizer.sep_id();
      row[1 + at - start] = tokenizer.mask_id();
      masked_pos.push_back(static_cast<int64_t>(r) * len + 1 + at - start);
    }
    Batch batch;
    batch.input_ids = at::tensor(input).view({rows, len});
    batch.token_type_ids = at::tensor(types).view({1, len}).expand({rows, len}).contiguous();
    batch.attention_mask = at::ones({rows, len}, at::kLong);
    const at::Tensor hidden = mlm->bert->forward(batch).last().reshape({rows * len, -1});
    const at::Tensor logits =
        mlm->logits(hidden.index_select(0, at::tensor(masked_pos).to(hidden.device())));
    const at::Tensor top =
        std::get<1>(logits.topk(std::min<int64_t>(candidates, logits.size(1)), 1))
            .cpu()
            .contiguous();
    const int64_t* t = top.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      auto& list = out[masked_words[begin + static_cast<size_t>(r)]];
      for (int64_t k = 0; k < top.size(1); ++k) {
        const std::string& token = vocab.token(t[r * top.size(1) + k]);
        if (is_content_word(token)) list.push_back(token);
      }
    }
  }
  return out;
}

std::vector<std::string> rewrite_text(const std::vector<Word>& words,
                                      const std::vector<std::vector<std::string>>& candidates,
                                      int64_t attempts, double p, std::mt19937_64& rng) {
  if (candidates.size() != words.size())
    fail("augment: ", candidates.size(), " candidate lists for ", words.size(), " words");
  const auto join = [](const std::vector<std::string>& w) {
    std::string s;
    for (const auto& x : w) s += (s.empty() ? "" : " ") + x;
    return s;
  };
  std::vector<std::string> original;
  for (const auto& w : words) original.push_back(w.text);
  std::set<std::string> seen = {join(original)};
  std::vector<std::string> out;
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (int64_t a = 0; a < attempts; ++a) {
    std::vector<std::string> text = original;
    for (size_t i = 0; i < words.size(); ++i) {
      if (candidates[i].empty()) continue;
      std::uniform_int_distribution<size_t> pick(0, candidates[i].size() - 1);
      const std::string& c = candidates[i][pick(rng)];
      if (coin(rng) < p) text[i] = c;
    }
    std::string s = join(text);
    if (seen.insert(s).second) out.push_back(std::move(s));
  }
  return out;
}

namespace {

std::string jsonl_row(const std::string& text, const std::optional<std::string>& pair,
                      const std::string& label) {
  nlohmann::json j = {{"text", text}};
  if (pair) j["text_pair"] = *pair;
  if (!label.empty()) j["label"] = label;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

AugmentResult augment_task(const AugmentOptions& o) {
  if (o.candidates < 1) fail("augment: --candidates must be at least 1, got ", o.candidates);
  if (o.per_example < 0) fail("augment: --per-example must be >= 0, got ", o.per_example);
  if (!(o.replace_prob >= 0 && o.replace_prob <= 1))
    fail("augment: --replace-prob must lie in [0, 1], got ", o.replace_prob);
  if (o.batch_size < 1) fail("augment: --batch-size must be at least 1, got ", o.batch_size);
  const TaskSpec spec = TaskSpec::make(o.task, o.data_dir, o.skip_bad_rows);
  FinetuneOptions subset;
  subset.max_train_examples = o.max_examples;
  subset.seed = o.subset_seed;
  const TaskData train = load_train_split(spec, subset);
  BertForMaskedLM mlm = load_masked_lm(o.mlm_dir);
  mlm->eval();
  const Tokenizer tokenizer = Tokenizer::from_dir(o.mlm_dir);
  check_tokenizer_fits(tokenizer, mlm->bert->config(), o.mlm_dir);

  AugmentResult result;
  write_dir_atomic(o.out_dir, [&](const std::string& dir) {
    write_file_atomic(dir + "/train.jsonl", [&](std::FILE* f) {
      Progress progress("augment", static_cast<int64_t>(train.examples.size()), "");
      for (size_t i = 0; i < train.examples.size(); ++i) {
        const Example& e = train.examples[i];
        const std::vector<Word> words = tokenizer.words(e.text_a);
        const auto cands =
            word_candidates(mlm, tokenizer, words, o.candidates, o.max_length, o.batch_size);
        std::mt19937_64 rng(mix_seed(o.seed, i, 17));
        const auto rewrites = rewrite_text(words, cands, o.per_example, o.replace_prob, rng);
        std::fputs(jsonl_row(e.text_a, e.text_b, e.label).c_str(), f);
        for (const auto& r : rewrites) std::fputs(jsonl_row(r, e.text_b, e.label).c_str(), f);
        result.originals += 1;
        result.rewrites += static_cast<int64_t>(rewrites.size());
        result.words += static_cast<int64_t>(words.size());
        for (const auto& c : cands) result.candidate_words += c.empty() ? 0 : 1;
        if ((i + 1) % 100 == 0 || i + 1 == train.examples.size())
          progress.report(static_cast<int64_t>(i + 1),
                          {{"rewrites", static_cast<double>(result.rewrites)}});
      }
      progress.finish();
    });
    for (const std::string split : {"dev", "test"}) {
      if (!fs::exists(spec.path(split))) continue;
      const TaskData data = spec.load(split);
      std::string text;
      for (const auto& e : data.examples) text += jsonl_row(e.text_a, e.text_b, e.label);
      write_file_atomic(dir + "/" + split + ".jsonl", text);
    }
    const nlohmann::json info = {
        {"source", spec.dir},
        {"task", spec.name},
        {"mlm", o.mlm_dir},
        {"candidates", o.candidates},
        {"per_example", o.per_example},
        {"replace_prob", o.replace_prob},
        {"max_length", o.max_length},
        {"max_examples", o.max_examples},
        {"subset_seed", o.subset_seed},
        {"seed", o.seed},
        {"originals", result.originals},
        {"rewrites", result.rewrites},
        {"words", result.words},
        {"candidate_words", result.candidate_words},
        {"note",
         "TinyBERT augmentation with MLM candidates only: no GloVe offline, so "
         "multi-piece words are never replaced"}};
    write_file_atomic(dir + "/augment.json", info.dump(2) + "\n");
  });
  return result;
}

}  // namespace slimbert
