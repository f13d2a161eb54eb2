#include <nlohmann/json.hpp>

#include "slimbert/core/fs.h"
#include "slimbert/model/config.h"
#include "test_util.h"

namespace slimbert {
namespace {

using test::TempDir;

TEST(Config, ReadsTheGoldenFixture) {
  BertConfig c = BertConfig::load(test::fixture("hf/model/config.json"));
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.intermediate_size, 256);
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_DOUBLE_EQ(c.layer_norm_eps, 1e-12);
  EXPECT_EQ(c.num_labels(), 3);
  EXPECT_EQ(c.label_name(2), "LABEL_2");
  EXPECT_EQ(c.attention_head_size(), 16);
  EXPECT_EQ(c.architectures.size(), 2u);
}

TEST(Config, RoundTripPreservesEveryKeyIncludingUnknownOnes) {
  TempDir dir;
  nlohmann::json original = nlohmann::json::parse(read_file(test::fixture("hf/model/config.json")));
  original["my_custom_key"] = {{"nested", 1}};
  original["pruned_heads"] = {{"1", {0, 2}}};
  original["problem_type"] = "single_label_classification";
  BertConfig c = BertConfig::from_json(original);
  c.save(dir / "config.json");
  nlohmann::json saved = nlohmann::json::parse(read_file(dir / "config.json"));
  for (auto it = original.begin(); it != original.end(); ++it) {
    ASSERT_TRUE(saved.contains(it.key())) << it.key();
    EXPECT_EQ(saved[it.key()], it.value()) << it.key();
  }
  BertConfig back = BertConfig::load(dir / "config.json");
  EXPECT_EQ(back.heads_in_layer(0), 4);
  EXPECT_EQ(back.heads_in_layer(1), 2);
  EXPECT_EQ(back.extra["my_custom_key"]["nested"], 1);
}

TEST(Config, DefaultsFollowHuggingFace) {
  BertConfig c = BertConfig::from_json(nlohmann::json::object());
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.num_labels(), 2);  // HF's default id2label has two labels
  EXPECT_EQ(c.hidden_act, "gelu");
}

TEST(Config, BadFieldsNameTheFieldAndWhatWasExpected) {
  EXPECT_ERROR_CONTAINS((BertConfig::from_json({{"hidden_size", -3}}, "x/config.json")),
                        "x/config.json", "'hidden_size'", "positive integer", "-3");
  EXPECT_ERROR_CONTAINS((BertConfig::from_json({{"hidden_act", "tanh"}})), "hidden_act", "'tanh'");
  EXPECT_ERROR_CONTAINS(BertConfig::from_json({{"hidden_size", 100}, {"num_attention_heads", 12}}),
                        "not a multiple");
  EXPECT_ERROR_CONTAINS((BertConfig::from_json({{"pruned_heads", {{"0", {12}}}}})),
                        "pruned_heads[0]", "head 12 out of range");
  EXPECT_ERROR_CONTAINS((BertConfig::from_json({{"id2label", {{"zero", "A"}}}})), "id2label",
                        "'zero'");
  EXPECT_ERROR_CONTAINS((BertConfig::from_json({{"model_type", "distilbert"}})), "model_type",
                        "'distilbert' is not supported (expected bert, roberta or xlm-roberta)");
  EXPECT_ERROR_CONTAINS(BertConfig::load("/nonexistent/config.json"), "/nonexistent/config.json",
                        "not found");
}

TEST(Config, PresetsHaveTheDocumentedShapes) {
  BertConfig mini = BertConfig::preset("mini");
  EXPECT_EQ(mini.num_hidden_layers, 4);
  EXPECT_EQ(mini.hidden_size, 256);
  EXPECT_EQ(mini.num_attention_heads, 4);
  EXPECT_EQ(mini.intermediate_size, 1024);
  BertConfig base = BertConfig::preset("base");
  EXPECT_EQ(base.num_hidden_layers, 12);
  EXPECT_EQ(base.hidden_size, 768);
  EXPECT_ERROR_CONTAINS(BertConfig::preset("huge"), "unknown preset 'huge'", "mini");
}

}  // namespace
}  // namespace slimbert
