// tokenizer.json against HF's tokenizers library itself: the goldens of
// tests/fixtures/tokenizers were made by tests/clients/tokenizer_goldens.mjs with the library's
// Rust code (npm @anush008/tokenizers) on 2,000 generated texts and pairs per tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/text/tokenizer.h"
#include "slimbert/text/tokenizer_json.h"
#include "slimbert/text/unicode.h"

#ifndef SLIMBERT_FIXTURES
#define SLIMBERT_FIXTURES "tests/fixtures"
#endif

namespace slimbert {
namespace {

const std::string kDir = std::string(SLIMBERT_FIXTURES) + "/tokenizers/";

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The library reports offsets in characters (code points) of each sequence's text.
std::vector<int64_t> char_offsets(const std::string& text, const std::vector<HfToken>& tokens,
                                  const std::optional<std::string>& pair) {
  std::vector<int64_t> out;
  for (const auto& t : tokens) {
    if (!t.bytes) {
      out.insert(out.end(), {0, 0});
      continue;
    }
    const std::string& src = t.sequence == 0 ? text : *pair;
    out.push_back(static_cast<int64_t>(unicode::decode_utf8(src.substr(0, t.bytes->first)).size()));
    out.push_back(
        static_cast<int64_t>(unicode::decode_utf8(src.substr(0, t.bytes->second)).size()));
  }
  return out;
}

struct Tally {
  int cases = 0, ids = 0, type_ids = 0, offsets = 0, decoded = 0, errors = 0;
  std::string first;
};

Tally compare(const std::string& name) {
  const auto hf = HfTokenizer::load(kDir + name + ".json");
  const auto cases = read_jsonl(kDir + "cases.jsonl");
  const auto golden = read_jsonl(kDir + name + ".golden.jsonl");
  EXPECT_EQ(cases.size(), golden.size());
  Tally t;
  for (size_t i = 0; i < std::min(cases.size(), golden.size()); ++i) {
    const auto& c = cases[i];
    const auto& g = golden[i];
    ++t.cases;
    const std::string text = c["t"];
    const std::optional<std::string> pair =
        c["p"].is_null() ? std::nullopt : std::optional<std::string>(c["p"]);
    std::optional<HfTruncation> trunc = HfTruncation{0, Truncation::kNone};
    if (!c["tr"].is_null()) {
      const auto& tr = c["tr"];
      trunc =
          HfTruncation{tr["max_length"].get<int64_t>(),
                       tr["strategy"] == "OnlyFirst"    ? Truncation::kOnlyFirst
                       : tr["strategy"] == "OnlySecond" ? Truncation::kOnlySecond
                                                        : Truncation::kLongestFirst,
                       tr["direction"] == "Left" ? TruncationSide::kLeft : TruncationSide::kRight};
    }
    auto note = [&](const std::string& what) {
      if (t.first.empty()) t.first = "case " + std::to_string(i) + " (" + c.dump() + "): " + what;
    };
    HfEncoding enc;
    try {
      enc = hf->encode(text, pair, c["sp"].get<bool>(), trunc);
    } catch (const InputError& e) {
      if (!g.value("err", false)) {
        ++t.errors;
        note(std::string("threw ") + e.what());
      }
      continue;
    }
    if (g.value("err", false)) {
      ++t.errors;
      note("did not throw");
      continue;
    }
    std::vector<int64_t> ids, types;
    for (const auto& tok : enc.tokens) {
      ids.push_back(tok.id);
      types.push_back(tok.type_id);
    }
    if (ids != g["ids"].get<std::vector<int64_t>>()) {
      ++t.ids;
      note("ids " + nlohmann::json(ids).dump() + " != " + g["ids"].dump());
      continue;
    }
    if (types != g["ty"].get<std::vector<int64_t>>()) {
      ++t.type_ids;
      note("type ids " + nlohmann::json(types).dump() + " != " + g["ty"].dump());
    }
    const auto offsets = char_offsets(text, enc.tokens, pair);
    if (offsets != g["off"].get<std::vector<int64_t>>()) {
      ++t.offsets;
      note("offsets " + nlohmann::json(offsets).dump() + " != " + g["off"].dump());
    }
    if (hf->decode(ids, false) != g["d0"].get<std::string>() ||
        hf->decode(ids, true) != g["d1"].get<std::string>()) {
      ++t.decoded;
      note("decoded '" + hf->decode(ids, false) + "' != '" + g["d0"].get<std::string>() + "'");
    }
  }
  return t;
}

class TokenizerJson : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerJson, AgreesWithHuggingFaceTokenizersOnEveryGoldenCase) {
  const Tally t = compare(GetParam());
  std::cout << GetParam() << ": " << t.cases << " cases; mismatches: ids " << t.ids << ", type ids "
            << t.type_ids << ", offsets " << t.offsets << ", decoded " << t.decoded << ", errors "
            << t.errors << "\n";
  EXPECT_GE(t.cases, 2000);
  EXPECT_EQ(t.errors, 0) << t.first;
  EXPECT_EQ(t.ids, 0) << t.first;
  EXPECT_EQ(t.type_ids, 0) << t.first;
  EXPECT_EQ(t.offsets, 0) << t.first;
  EXPECT_EQ(t.decoded, 0) << t.first;
}

INSTANTIATE_TEST_SUITE_P(Golden, TokenizerJson,
                         ::testing::Values("bert-wordpiece", "roberta-bpe", "roberta-tiny",
                                           "xlmr-unigram", "llama-bpe-fallback", "mix-wordpiece"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("slimbert-tj-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(TokenizerJson, ADirectoryWithTokenizerJsonRunsItsPipelineEverywhere) {
  const std::string dir = temp_dir("roberta");
  std::filesystem::copy_file(kDir + "roberta-bpe.json", dir + "/tokenizer.json");
  const Tokenizer t = Tokenizer::from_dir(dir);
  ASSERT_NE(t.hf(), nullptr);
  // RoBERTa's special tokens come from its post-processor and vocabulary.
  EXPECT_EQ(t.options().cls_token, "<s>");
  EXPECT_EQ(t.options().sep_token, "</s>");
  EXPECT_EQ(t.options().pad_token, "<pad>");
  EXPECT_EQ(t.options().mask_token, "<mask>");
  EXPECT_EQ(t.options().unk_token, "<unk>");
  EXPECT_EQ(t.cls_id(), 0);
  EXPECT_EQ(t.pad_id(), 1);
  EXPECT_TRUE(t.is_special("<mask>"));
  EXPECT_FALSE(t.is_special("Hello"));
  // Ġ marks the space byte-level BPE keeps with a word.
  EXPECT_EQ(t.tokenize("Hello world"), (std::vector<std::string>{"Hello", "\u0120world"}));
  const Encoding e = t.encode("Hello world", std::string("again"));
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"<s>", "Hello", "\u0120world", "</s>", "</s>",
                                                "again", "</s>"}));
  EXPECT_EQ(e.token_type_ids, std::vector<int64_t>(7, 0));  // RoBERTa has one token type
  // The caller's max_length truncates with the library's rule (specials counted).
  EncodeOptions o;
  o.max_length = 5;
  const Encoding cut = t.encode("one two three four five", std::nullopt, o);
  EXPECT_EQ(cut.input_ids.size(), 5u);
  EXPECT_EQ(cut.num_truncated, 2);
  EXPECT_EQ(t.decode(cut.input_ids, true), "one two three");
  // Spans point at the bytes, with byte-level BPE's space left out.
  const auto spans = t.spans("Hi there");
  ASSERT_EQ(spans.size(), 4u);
  EXPECT_FALSE(spans[0].bytes);
  EXPECT_EQ(spans[2].bytes, std::make_pair(size_t{3}, size_t{8}));
  // Batches pad with the file's pad token.
  const auto batch = t.encode_batch({"a", "a b c"}, {},
                                    EncodeOptions{std::nullopt, Truncation::kLongestFirst,
                                                  TruncationSide::kRight, Padding::kLongest});
  EXPECT_EQ(batch[0].input_ids.back(), 1);
  EXPECT_EQ(batch[0].attention_mask.back(), 0);
  // Saved as tokenizer.json (no vocab.txt), and read back the same.
  const std::string out = temp_dir("roberta-saved");
  t.save(out);
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
  EXPECT_FALSE(std::filesystem::exists(out + "/vocab.txt"));
  const Tokenizer back = Tokenizer::from_dir(out);
  EXPECT_EQ(back.encode("Hello world").input_ids, t.encode("Hello world").input_ids);
  EXPECT_EQ(back.options().mask_token, "<mask>");
}

// A RoBERTa directory with its slow tokenizer's files only (vocab.json, merges.txt) runs the
// pipeline transformers converts them to: the same ids as that tokenizer.json.
TEST(TokenizerJson, RobertasVocabJsonAndMergesTxtTokenizeAsItsTokenizerJson) {
  const auto spec = read_json_file(kDir + "roberta-tiny.json");
  const std::string dir = temp_dir("roberta-slow");
  write_file_atomic(dir + "/vocab.json", spec["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& m : spec["model"]["merges"]) merges += m.get<std::string>() + "\n";
  write_file_atomic(dir + "/merges.txt", merges);
  const Tokenizer slow = Tokenizer::from_dir(dir);
  const Tokenizer fast = Tokenizer::from_file(kDir + "roberta-tiny.json");
  ASSERT_NE(slow.hf(), nullptr);
  EXPECT_EQ(slow.mask_id(), fast.mask_id());
  int compared = 0;
  for (const auto& c : read_jsonl(kDir + "cases.jsonl")) {
    const std::optional<std::string> pair =
        c["p"].is_null() ? std::nullopt : std::optional<std::string>(c["p"]);
    EXPECT_EQ(slow.encode(c["t"].get<std::string>(), pair).input_ids,
              fast.encode(c["t"].get<std::string>(), pair).input_ids)
        << c.dump();
    if (++compared == 300) break;
  }
}

// A megabyte-long word, or a long run of Hangul jamo that composition joins, takes time in
// proportion to its length (a quadratic merge loop would not return): a request cannot stall a
// server thread.
TEST(TokenizerJson, HugeWordsAndLongCompositionsStayLinearithmic) {
  const auto bpe = HfTokenizer::load(kDir + "roberta-tiny.json");
  std::string word;
  for (int i = 0; i < 300000; ++i) word += "abcdefgh"[(i * 7 + i / 3) % 8];
  const HfEncoding e = bpe->encode(word, std::nullopt, false, std::nullopt);
  ASSERT_GT(e.tokens.size(), 1000u);
  std::vector<int64_t> ids;
  for (const auto& t : e.tokens) ids.push_back(t.id);
  EXPECT_EQ(bpe->decode(ids, false), word);
  std::string jamo;  // U+1100 + U+1161 compose to U+AC00 under NFKC
  for (int i = 0; i < 50000; ++i) jamo += "\u1100\u1161";
  const auto mix = HfTokenizer::load(kDir + "mix-wordpiece.json");
  EXPECT_FALSE(mix->encode(jamo, std::nullopt, false, std::nullopt).tokens.empty());
}

TEST(TokenizerJson, UnsupportedComponentsAndBadFilesAreErrorsThatNameThem) {
  auto error_of = [](const std::string& text) {
    try {
      HfTokenizer::parse(text, "t.json");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string model =
      R"("model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1}})";
  EXPECT_NE(error_of("{" + model + R"(, "normalizer": {"type": "Nmt"}})")
                .find("t.json: normalizer: normalizer 'Nmt' is not supported"),
            std::string::npos)
      << error_of("{" + model + R"(, "normalizer": {"type": "Nmt"}})");
  EXPECT_NE(error_of("{" + model + R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers":
      [{"type": "Whitespace"}, {"type": "UnicodeScripts"}]}})")
                .find("pre_tokenizer.pretokenizers[1]: pre-tokenizer 'UnicodeScripts' is not "
                      "supported"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "Shiny"}})").find("model 'Shiny' is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("{" + model + R"(, "decoder": {"type": "CTC"}})").find("decoder 'CTC'"),
            std::string::npos);
  EXPECT_NE(error_of("{" + model + R"(, "post_processor": {"type": "Bert"}})")
                .find("post-processor 'Bert' is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("{" + model + R"(, "normalizer": {"type": "Replace", "pattern":
      {"Regex": "(["}, "content": ""}})")
                .find("does not compile"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})")
                .find("merges[0]: 'b' is not in vocab"),
            std::string::npos);
  EXPECT_NE(error_of("{\"model\": ").find("t.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("{}").find("missing field 'model'"), std::string::npos);
  // Found by fuzzing: a number too large for a double is the file's error, not the library's.
  EXPECT_NE(error_of(R"({"model": {"type": "WordPiece", "vocab": {"a": 1e308271}}})")
                .find("t.json: not valid JSON"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"type": "Unigram", "vocab": [["a", "x"]]}})")
                .find("vocab[0] must be [piece, score]"),
            std::string::npos);
}

}  // namespace
}  // namespace slimbert
