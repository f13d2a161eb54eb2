// DynaBERT's TinyBERT-style augmentation: the word split, MLM candidates against a hand-built
// masked input, rewrite sampling, and the augmented task directory.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "slimbert/core/fs.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/pretrain.h"
#include "test_util.h"

namespace slimbert {
namespace {

using test::TempDir;

// A tiny random masked LM over a vocabulary of real words, stop words, punctuation and a
// continuation piece, saved with its tokenizer.
struct AugWorld {
  TempDir dir;
  std::string mlm;
  AugWorld() {
    const std::vector<std::string> tokens = {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".",    ",",      "the",  "a",     "of",
        "and",   "cat",   "dog",   "red",   "blue",   "runs", "sits",   "fast", "big",   "small",
        "house", "tree",  "green", "jumps", "##s",    "9",    "slowly", "bird", "sings", "loud"};
    const Tokenizer tokenizer(Vocab::from_tokens(tokens), TokenizerOptions{});
    BertConfig c = test::tiny_config(static_cast<int64_t>(tokens.size()), 64);
    BertForMaskedLM model(c);
    init_weights(*model, c, 5);
    mlm = dir / "mlm";
    save_checkpoint(mlm, c, *model, tokenizer);
  }
};

const AugWorld& aug_world() {
  static AugWorld w;
  return w;
}

TEST(Augment, WordsSplitLikeTokenize) {
  const Tokenizer t(Vocab::load(test::fixture("vocab/bert-base-uncased-vocab.txt")),
                    TokenizerOptions{});
  for (const std::string text :
       {"Hello, World! unaffable [SEP] naïve café", "", "  x  ", "中文 tokens 123.45 don't"}) {
    std::vector<std::string> joined;
    for (const Word& w : t.words(text)) {
      EXPECT_FALSE(w.pieces.empty()) << w.text;
      joined.insert(joined.end(), w.pieces.begin(), w.pieces.end());
    }
    EXPECT_EQ(joined, t.tokenize(text)) << text;
  }
  const auto w = t.words("Unaffable cats.");
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].text, "unaffable");
  EXPECT_EQ(w[0].pieces, (std::vector<std::string>{"una", "##ffa", "##ble"}));
  EXPECT_EQ(w[2].text, ".");
}

// The candidates of the word at piece `at` computed by hand: one masked input, full MLM logits.
std::vector<std::string> by_hand(const BertForMaskedLM& mlm, const Tokenizer& t,
                                 const std::vector<std::string>& pieces, int64_t at, int64_t window,
                                 int64_t m) {
  const auto ids = t.convert_tokens_to_ids(pieces);
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t start = std::clamp<int64_t>(at - window / 2, 0, n - window);
  std::vector<int64_t> input = {t.cls_id()}, types = {0};
  for (int64_t k = start; k < start + window; ++k) {
    input.push_back(k == at ? t.mask_id() : ids[static_cast<size_t>(k)]);
    types.push_back(0);
  }
  input.push_back(t.sep_id());
  types.push_back(0);
  for (int64_t k = start; k < start + window; ++k) {
    input.push_back(ids[static_cast<size_t>(k)]);
    types.push_back(1);
  }
  input.push_back(t.sep_id());
  types.push_back(1);
  const int64_t len = static_cast<int64_t>(input.size());
  Batch b{at::tensor(input).view({1, len}), at::tensor(types).view({1, len}),
          at::ones({1, len}, at::kLong)};
  torch::NoGradGuard no_grad;
  const at::Tensor logits = mlm->forward(b)[0][1 + at - start];
  const at::Tensor top = std::get<1>(logits.topk(m));
  std::vector<std::string> out;
  for (int64_t k = 0; k < m; ++k) {
    const std::string& tok = t.vocab().token(top[k].item<int64_t>());
    if (tok.find_first_of("[#.,9") == std::string::npos && tok != "the" && tok != "a" &&
        tok != "of" && tok != "and")
      out.push_back(tok);
  }
  return out;
}

TEST(Augment, CandidatesAreTheMaskedLmTopWordsOfTheWindow) {
  BertForMaskedLM mlm = load_masked_lm(aug_world().mlm);
  mlm->eval();
  const Tokenizer t = Tokenizer::from_dir(aug_world().mlm);
  const std::string text = "the big cat runs fast , a red dogs sits of 9 the blue tree";
  const std::vector<Word> words = t.words(text);
  std::vector<std::string> pieces;
  for (const auto& w : words) pieces.insert(pieces.end(), w.pieces.begin(), w.pieces.end());
  const int64_t m = 20;
  for (const int64_t max_length : {int64_t{128}, int64_t{13}}) {  // whole text; a 5-piece window
    const int64_t window =
        std::min<int64_t>(static_cast<int64_t>(pieces.size()), (max_length - 3) / 2);
    const auto one = word_candidates(mlm, t, words, m, max_length, 1);
    const auto many = word_candidates(mlm, t, words, m, max_length, 64);
    ASSERT_EQ(one.size(), words.size());
    EXPECT_EQ(one, many) << "batching changed the candidates";
    size_t piece = 0, with_candidates = 0;
    for (size_t i = 0; i < words.size(); ++i) {
      const bool content = words[i].pieces.size() == 1 && words[i].text != "the" &&
                           words[i].text != "a" && words[i].text != "of" &&
                           words[i].text.find_first_of(".,9") == std::string::npos;
      if (content) {
        EXPECT_EQ(one[i], by_hand(mlm, t, pieces, static_cast<int64_t>(piece), window, m))
            << words[i].text << " at max_length " << max_length;
        with_candidates += one[i].empty() ? 0 : 1;
      } else {
        EXPECT_TRUE(one[i].empty()) << words[i].text << " (stop word, punctuation, number or "
                                    << "multi-piece word) got candidates";
      }
      piece += words[i].pieces.size();
    }
    EXPECT_GE(with_candidates, 5u);
  }
}

TEST(Augment, RewritesReplaceOnlyCandidateWordsAndAreDistinct) {
  std::vector<Word> words = {{"the", {"the"}}, {"cat", {"cat"}}, {"runs", {"runs"}}};
  const std::vector<std::vector<std::string>> one = {{}, {"dog"}, {"sits"}};
  std::mt19937_64 rng(1);
  // p = 1 and one candidate each: every attempt gives the same rewrite, kept once.
  EXPECT_EQ(rewrite_text(words, one, 10, 1.0, rng), std::vector<std::string>{"the dog sits"});
  // p = 0: nothing changes, so nothing new.
  EXPECT_TRUE(rewrite_text(words, one, 10, 0.0, rng).empty());
  const std::vector<std::vector<std::string>> many = {
      {}, {"dog", "bird", "tree", "house"}, {"sits", "sings", "jumps"}};
  std::mt19937_64 a(7), b(7);
  const auto first = rewrite_text(words, many, 30, 0.4, a);
  EXPECT_EQ(first, rewrite_text(words, many, 30, 0.4, b)) << "same seed, same rewrites";
  EXPECT_GT(first.size(), 3u);
  EXPECT_LE(first.size(), 30u);
  std::set<std::string> seen(first.begin(), first.end());
  EXPECT_EQ(seen.size(), first.size());
  EXPECT_EQ(seen.count("the cat runs"), 0u);
  for (const auto& r : first) EXPECT_EQ(r.rfind("the ", 0), 0u) << r;
  EXPECT_ERROR_CONTAINS(rewrite_text(words, {{}}, 1, 0.5, a), "1 candidate lists for 3 words");
}

TEST(Augment, WritesOriginalsThenRewritesAsAJsonlTask) {
  TempDir dir;
  const std::string data = dir / "pairs";
  std::filesystem::create_directories(data);
  std::string train = "sentence1\tsentence2\tlabel\n";
  const std::vector<std::string> texts = {"the big cat runs", "a red dog sits",
                                          "the blue bird sings", "small house of tree",
                                          "green tree jumps fast"};
  for (size_t i = 0; i < texts.size(); ++i)
    train += texts[i] + "\tpair " + std::to_string(i) + "\t" + (i % 2 ? "yes" : "no") + "\n";
  write_file_atomic(data + "/train.tsv", train);
  write_file_atomic(data + "/dev.tsv", "sentence1\tsentence2\tlabel\ncat\tdog\tyes\n");

  AugmentOptions o;
  o.mlm_dir = aug_world().mlm;
  o.task = "tsv";
  o.data_dir = data;
  o.out_dir = dir / "aug";
  o.per_example = 8;
  const AugmentResult r = augment_task(o);
  EXPECT_EQ(r.originals, 5);
  EXPECT_GT(r.rewrites, 5);
  EXPECT_EQ(r.words, 20);
  EXPECT_EQ(r.candidate_words, 16);  // all but the stop words "the" (twice), "a" and "of"

  const TaskSpec aug = TaskSpec::make("jsonl", o.out_dir);
  const TaskSpec src = TaskSpec::make("tsv", data);
  EXPECT_EQ(aug.labels, src.labels);
  const TaskData rows = aug.load("train");
  ASSERT_EQ(static_cast<int64_t>(rows.examples.size()), r.originals + r.rewrites);
  const TaskData originals = src.load("train");
  size_t next = 0;
  for (const Example& e : rows.examples) {
    // Each original comes first, then its rewrites with the same second text and label.
    if (next < originals.examples.size() && e.text_a == originals.examples[next].text_a) {
      ++next;
      continue;
    }
    ASSERT_GT(next, 0u);
    const Example& from = originals.examples[next - 1];
    EXPECT_EQ(e.text_b, from.text_b);
    EXPECT_EQ(e.label, from.label);
    EXPECT_NE(e.text_a, from.text_a);
    EXPECT_EQ(std::count(e.text_a.begin(), e.text_a.end(), ' '),
              std::count(from.text_a.begin(), from.text_a.end(), ' '));
  }
  EXPECT_EQ(next, originals.examples.size());
  EXPECT_EQ(aug.load("dev").examples.size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(aug.path("test")));

  // Deterministic; --max-examples augments the subset fine-tuning would train on.
  const std::string first = read_file(o.out_dir + "/train.jsonl");
  augment_task(o);
  EXPECT_EQ(read_file(o.out_dir + "/train.jsonl"), first);
  o.max_examples = 2;
  o.subset_seed = 3;
  EXPECT_EQ(augment_task(o).originals, 2);
  FinetuneOptions f;
  f.max_train_examples = 2;
  f.seed = 3;
  const TaskData subset = load_train_split(src, f);
  const std::string rows_text = read_file(o.out_dir + "/train.jsonl");
  const auto first_row = nlohmann::json::parse(rows_text.substr(0, rows_text.find('\n')));
  EXPECT_EQ(first_row.at("text"), subset.examples[0].text_a);

  o.replace_prob = 1.5;
  EXPECT_ERROR_CONTAINS(augment_task(o), "--replace-prob", "1.5");
}

}  // namespace
}  // namespace slimbert
