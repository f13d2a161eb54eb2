#include <fstream>
#include <nlohmann/json.hpp>

#include "slimbert/core/fs.h"
#include "slimbert/text/tokenizer.h"
#include "slimbert/text/unicode.h"
#include "test_util.h"

namespace slimbert {
namespace {

const Tokenizer& bert_uncased() {
  static const Tokenizer t(Vocab::load(test::fixture("vocab/bert-base-uncased-vocab.txt")),
                           TokenizerOptions{});
  return t;
}

std::vector<std::string> toks(const std::string& text) {
  return bert_uncased().tokenize(text);
}
using Strings = std::vector<std::string>;

// Every golden case of HF BertTokenizer (transformers 4.31) must match exactly.
TEST(Tokenizer, MatchesEveryHuggingFaceGoldenCase) {
  std::ifstream in(test::fixture("hf/tokenizer_public.jsonl"));
  std::string line;
  int cases = 0, mismatches = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    std::optional<std::string> pair;
    if (j.contains("text_pair")) pair = j["text_pair"].get<std::string>();
    EncodeOptions o;
    if (j.contains("max_length")) o.max_length = j["max_length"].get<int64_t>();
    Encoding e = bert_uncased().encode(j["text"].get<std::string>(), pair, o);
    ++cases;
    const bool same = e.input_ids == j["input_ids"].get<std::vector<int64_t>>() &&
                      e.tokens == j["tokens"].get<Strings>() &&
                      e.token_type_ids == j["token_type_ids"].get<std::vector<int64_t>>();
    if (!same) ++mismatches;
    EXPECT_TRUE(same) << j["id"] << " (" << j["category"] << "): " << j["text"];
  }
  EXPECT_EQ(cases, 309);
  EXPECT_EQ(mismatches, 0);
}

TEST(Tokenizer, VocabularyIdsOfTheRealBertVocab) {
  const Tokenizer& t = bert_uncased();
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.unk_id(), 100);
  EXPECT_EQ(t.cls_id(), 101);
  EXPECT_EQ(t.sep_id(), 102);
  EXPECT_EQ(t.mask_id(), 103);
  EXPECT_EQ(*t.vocab().find("the"), 1996);
  EXPECT_EQ(t.vocab().size(), 30522);
}

TEST(Tokenizer, BasicRules) {
  EXPECT_EQ(toks("Hello, World!"), (Strings{"hello", ",", "world", "!"}));
  EXPECT_EQ(toks("unaffable"), (Strings{"una", "##ffa", "##ble"}));
  EXPECT_EQ(toks("Héllo Ünïcödé"), (Strings{"hello", "unicode"}));   // accents stripped
  EXPECT_EQ(toks("a中文b"), (Strings{"a", "中", "文", "b"}));        // CJK isolated
  EXPECT_EQ(toks("a\tb\nc\u00a0d"), (Strings{"a", "b", "c", "d"}));  // whitespace kinds
  EXPECT_EQ(toks("x\u200by"), toks("xy"));                           // format char dropped
  EXPECT_EQ(toks(std::string(101, 'a')), (Strings{"[UNK]"}));        // over 100 chars
  EXPECT_EQ(toks("price €5"), (Strings{"price", "€", "##5"}));       // symbols stay in words
  EXPECT_EQ(toks(""), Strings{});
  EXPECT_EQ(toks("   "), Strings{});
}

TEST(Tokenizer, SpecialTokenLiteralsAreCaseSensitiveAndEatAdjacentSpace) {
  EXPECT_EQ(toks("a [MASK] b"), (Strings{"a", "[MASK]", "b"}));
  EXPECT_EQ(toks("a[SEP]b"), (Strings{"a", "[SEP]", "b"}));
  EXPECT_EQ(toks("[mask]"), (Strings{"[", "mask", "]"}));
  // Lower-cased one code point at a time: never the final sigma.
  EXPECT_EQ(toks("ΣΑΣ"), toks("σασ"));
  EXPECT_NE(toks("ΣΑΣ"), toks("σας"));
}

TEST(Tokenizer, InvalidUtf8IsReplacedNeverACrash) {
  const std::string bad = std::string("ok \xff\xfe bad \xc3") + " end";
  EXPECT_EQ(toks(bad), (Strings{"ok", "bad", "end"}));  // U+FFFD is dropped by cleaning
  const std::u32string truncated = unicode::decode_utf8("ab\xe2\x82");
  ASSERT_GE(truncated.size(), 3u);
  EXPECT_EQ(truncated.substr(0, 2), U"ab");
  for (size_t i = 2; i < truncated.size(); ++i) EXPECT_EQ(truncated[i], char32_t{0xFFFD});
}

TEST(Tokenizer, PairEncodingAndTruncationStrategies) {
  const Tokenizer& t = bert_uncased();
  Encoding e = t.encode("a b c d e", std::string("f g"));
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "c", "d", "e", "[SEP]", "f", "g", "[SEP]"}));
  EXPECT_EQ(e.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(e.attention_mask, std::vector<int64_t>(10, 1));

  // longest_first removes from the longer side, from the second on ties.
  e = t.encode("a b c d e", std::string("f g"), {8});
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "c", "[SEP]", "f", "g", "[SEP]"}));
  e = t.encode("a b c", std::string("f g h"), {7});
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "[SEP]", "f", "g", "[SEP]"}));
  e = t.encode("a b c", std::string("f g h"), {8});
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "c", "[SEP]", "f", "g", "[SEP]"}));
  EXPECT_EQ(e.num_truncated, 1);

  EXPECT_ERROR_CONTAINS((t.encode("a b", std::string("f g"), {4, Truncation::kOnlySecond})),
                        "only_second", "has 2 tokens");
  e = t.encode("a b c d e", std::string("f g"), {8, Truncation::kOnlyFirst});
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "c", "[SEP]", "f", "g", "[SEP]"}));
  e = t.encode("a b c d e", std::nullopt, {4});
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "b", "[SEP]"}));
  e = t.encode("a", std::string(""));
  EXPECT_EQ(e.tokens, (Strings{"[CLS]", "a", "[SEP]", "[SEP]"}));
}

// Each token's bytes in the text it came from (TEI's /tokenize offsets): through lower-casing,
// accent stripping, CJK isolation, word pieces and special-token literals.
TEST(Tokenizer, SpansPointAtTheBytesEachTokenCameFrom) {
  const std::string text = "H\u00e9llo, \u4e16\u754c! unaffable  [MASK]";
  const std::vector<TokenSpan> spans = bert_uncased().spans(text);
  std::vector<std::string> pieces, sources;
  for (const TokenSpan& s : spans) {
    pieces.push_back(s.token);
    sources.push_back(s.bytes ? text.substr(s.bytes->first, s.bytes->second - s.bytes->first)
                              : std::string("-"));
  }
  EXPECT_EQ(pieces, bert_uncased().encode(text).tokens);
  EXPECT_EQ(sources, (std::vector<std::string>{"-", "H\u00e9llo", ",", "\u4e16", "\u754c", "!",
                                               "una", "ffa", "ble", "[MASK]", "-"}));
  EXPECT_TRUE(spans.front().special);
  EXPECT_FALSE(spans[1].special);
  EXPECT_EQ(spans[1].id, bert_uncased().vocab().find("hello"));
  EXPECT_EQ(bert_uncased().spans("a b", false).size(), 2u);
  // Truncation from the left keeps the end of the text.
  EncodeOptions left{4, Truncation::kLongestFirst};
  left.side = TruncationSide::kLeft;
  EXPECT_EQ(bert_uncased().encode("one two three four", std::nullopt, left).tokens,
            (std::vector<std::string>{"[CLS]", "three", "four", "[SEP]"}));
}

TEST(Tokenizer, BatchPaddingLongestAndMaxLength) {
  const Tokenizer& t = bert_uncased();
  auto batch = t.encode_batch({"a b c", "a"}, {},
                              EncodeOptions{std::nullopt, Truncation::kLongestFirst,
                                            TruncationSide::kRight, Padding::kLongest});
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[1].input_ids, (std::vector<int64_t>{101, 1037, 102, 0, 0}));
  EXPECT_EQ(batch[1].attention_mask, (std::vector<int64_t>{1, 1, 1, 0, 0}));
  batch = t.encode_batch(
      {"a b c", "a"}, {},
      EncodeOptions{8, Truncation::kLongestFirst, TruncationSide::kRight, Padding::kMaxLength});
  EXPECT_EQ(batch[0].input_ids.size(), 8u);
  EXPECT_EQ(batch[1].input_ids.size(), 8u);
}

TEST(Tokenizer, DecodeJoinsPiecesAndCleansSpaces) {
  const Tokenizer& t = bert_uncased();
  Encoding e = t.encode("Unaffable people don't, really.");
  EXPECT_EQ(t.decode(e.input_ids), "[CLS] unaffable people don't, really. [SEP]");
  EXPECT_EQ(t.decode(e.input_ids, /*skip_special_tokens=*/true), "unaffable people don't, really.");
}

TEST(Tokenizer, OptionsFromTokenizerConfig) {
  test::TempDir dir;
  write_file_atomic(
      dir / "tokenizer_config.json",
      R"({"do_lower_case": false, "model_max_length": 1e30, "unk_token": {"content": "[UNK]"}})");
  TokenizerOptions o = TokenizerOptions::from_json_file(dir / "tokenizer_config.json");
  EXPECT_FALSE(o.do_lower_case);
  EXPECT_GT(o.model_max_length, int64_t{1} << 60);
  Tokenizer cased(Vocab::load(test::fixture("vocab/bert-base-uncased-vocab.txt")), o);
  EXPECT_EQ(cased.tokenize("Hello"), (Strings{"[UNK]"}));  // uncased vocab has no "Hello"
  write_file_atomic(dir / "tokenizer_config.json", R"({"do_lower_case": "yes"})");
  EXPECT_ERROR_CONTAINS(TokenizerOptions::from_json_file(dir / "tokenizer_config.json"),
                        "do_lower_case");
}

TEST(Tokenizer, SaveAndReloadFromDirectory) {
  test::TempDir dir;
  bert_uncased().save(dir.path());
  Tokenizer back = Tokenizer::from_dir(dir.path());
  EXPECT_EQ(back.vocab().tokens(), bert_uncased().vocab().tokens());
  EXPECT_EQ(read_file(dir / "vocab.txt"),
            read_file(test::fixture("vocab/bert-base-uncased-vocab.txt")));
  auto special = nlohmann::json::parse(read_file(dir / "special_tokens_map.json"));
  EXPECT_EQ(special["mask_token"], "[MASK]");
}

TEST(Tokenizer, MissingFilesAndSpecialTokensAreClearErrors) {
  EXPECT_ERROR_CONTAINS(Tokenizer::from_dir("/nonexistent"), "/nonexistent/vocab.txt", "not found");
  EXPECT_ERROR_CONTAINS((Tokenizer(Vocab::from_tokens({"[PAD]", "a"}), TokenizerOptions{})),
                        "[UNK]");
}

}  // namespace
}  // namespace slimbert
