#include <ATen/ATen.h>

#include <set>

#include "slimbert/io/checkpoint.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/flops.h"
#include "slimbert/model/names.h"
#include "test_util.h"

namespace slimbert {
namespace {

// Outputs of HF transformers 4.31 (float32) on the fixture model; tolerance per the fixture README.
constexpr double kGoldenTolerance = 1e-5;

using test::golden;
using test::golden_batch;
using test::max_diff;

const std::string& model_dir() {
  static const std::string dir = test::fixture("hf/model");
  return dir;
}

TEST(ModelGolden, BertModelHiddenStatesAndPoolerMatchHuggingFace) {
  BertModel model = load_bert_model(model_dir(), /*with_pooler=*/true);
  at::NoGradGuard no_grad;
  Encoded out = model->forward(golden_batch());
  ASSERT_EQ(out.hidden_states.size(), 3u);
  for (size_t i = 0; i < out.hidden_states.size(); ++i)
    EXPECT_LE(max_diff(out.hidden_states[i], golden().at("hidden_states." + std::to_string(i))),
              kGoldenTolerance)
        << "hidden_states." << i;
  EXPECT_LE(max_diff(out.last(), golden().at("last_hidden_state")), kGoldenTolerance);
  EXPECT_LE(max_diff(out.pooled, golden().at("pooler_output")), kGoldenTolerance);
}

TEST(ModelGolden, MaskedLmLogitsMatchHuggingFace) {
  BertForMaskedLM model = load_masked_lm(model_dir());
  at::NoGradGuard no_grad;
  EXPECT_LE(max_diff(model->forward(golden_batch()), golden().at("mlm_logits")), kGoldenTolerance);
}

TEST(ModelGolden, ClassificationLogitsMatchHuggingFace) {
  BertForSequenceClassification model = load_classifier(model_dir());
  at::NoGradGuard no_grad;
  EXPECT_LE(max_diff(model->forward(golden_batch()), golden().at("cls_logits")), 1e-6);
}

TEST(ModelGolden, PaddedRowEqualsTheSameSequenceAlone) {
  BertModel model = load_bert_model(model_dir());
  at::NoGradGuard no_grad;
  Batch b = golden_batch();
  const int64_t n = b.attention_mask[1].sum().item<int64_t>();  // row 1: 10 real tokens
  Batch alone{b.input_ids.narrow(0, 1, 1).narrow(1, 0, n),
              b.token_type_ids.narrow(0, 1, 1).narrow(1, 0, n), at::Tensor()};
  at::Tensor full = model->forward(b).last()[1].narrow(0, 0, n);
  EXPECT_LE(max_diff(model->forward(alone).last()[0], full), 1e-5);
}

// ---- Sub-networks (ALGORITHMS.md §B.2-B.3) ------------------------------------------------------

TEST(SubNet, DepthRuleReproducesTheReferenceTable) {
  EXPECT_EQ(kept_layers(12, 1.0), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(kept_layers(12, 0.75), (std::vector<int64_t>{0, 1, 2, 4, 5, 6, 8, 9, 10}));
  EXPECT_EQ(kept_layers(12, 0.5), (std::vector<int64_t>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(kept_layers(4, 0.5), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(kept_layers(4, 0.75), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_ERROR_CONTAINS(kept_layers(12, 0.0), "depth multiplier");
}

TEST(SubNet, WidthRuleReproducesTheReferenceTable) {
  BertConfig base = BertConfig::preset("base");
  const std::pair<double, LayerShape> expected[] = {
      {1.0, {12, 64, 3072}}, {0.75, {9, 64, 2304}}, {0.5, {6, 64, 1536}}, {0.25, {3, 64, 768}}};
  for (const auto& [w, s] : expected) {
    LayerShape got = layer_shape(base, 0, w);
    EXPECT_EQ(got.heads, s.heads) << w;
    EXPECT_EQ(got.ffn, s.ffn) << w;
  }
  EXPECT_ERROR_CONTAINS(kept_heads(12, 1.5), "width multiplier");
}

// ---- Training behaviour -------------------------------------------------------------------------

TEST(Model, DropoutOnlyInTrainMode) {
  BertForMaskedLM model = load_masked_lm(model_dir());
  at::NoGradGuard no_grad;
  at::Tensor e1 = model->forward(golden_batch()), e2 = model->forward(golden_batch());
  EXPECT_TRUE(at::equal(e1, e2));
  model->train();
  EXPECT_GT(max_diff(model->forward(golden_batch()), model->forward(golden_batch())), 1e-4);
}

TEST(Model, GradientsReachEveryParameterIncludingTiedDecoder) {
  BertForMaskedLM model = load_masked_lm(model_dir());
  model->train();
  at::Tensor logits = model->forward(golden_batch());  // (B, T, V)
  at::Tensor loss =
      at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), golden().at("input_ids").view(-1));
  loss.backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(Model, MaskedPositionLogitsEqualFullLogitsAtThosePositions) {
  BertForMaskedLM model = load_masked_lm(model_dir());
  at::NoGradGuard no_grad;
  at::Tensor hidden = model->bert->forward(golden_batch()).last();  // (B, T, H)
  at::Tensor rows =
      hidden.view({-1, hidden.size(-1)}).index_select(0, at::tensor({1, 17, 40}, at::kLong));
  at::Tensor full = model->forward(golden_batch())
                        .view({-1, 1000})
                        .index_select(0, at::tensor({1, 17, 40}, at::kLong));
  EXPECT_LE(max_diff(model->logits(rows), full), 1e-6);
}

// The names code builds by hand (hf::*) are exactly the modules' own, both ways.
TEST(Model, HfNamesNameEveryParameterOfBothHeads) {
  BertConfig c;
  c.vocab_size = 30;
  c.hidden_size = 8;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 12;
  c.max_position_embeddings = 16;
  auto names_of = [](torch::nn::Module& m) {
    std::set<std::string> out;
    for (const auto& p : m.named_parameters()) out.insert(p.key());
    return out;
  };
  auto built = [&](bool mlm) {
    std::set<std::string> out;
    auto add = [&](const std::string& module, bool with_bias = true) {
      out.insert(hf::path({module, "weight"}));
      if (with_bias) out.insert(hf::path({module, "bias"}));
    };
    for (const char* table :
         {hf::kWordEmbeddings, hf::kPositionEmbeddings, hf::kTokenTypeEmbeddings})
      add(hf::encoder(table), false);
    add(hf::encoder(hf::kEmbeddingNorm));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (const char* m : {hf::kQuery, hf::kKey, hf::kValue, hf::kAttentionOutput,
                            hf::kAttentionNorm, hf::kIntermediate, hf::kOutput, hf::kOutputNorm})
        add(hf::encoder_layer(l, m));
    if (mlm) {
      add(hf::kMlmTransform);
      add(hf::kMlmNorm);
      out.insert(hf::kMlmBias);
    } else {
      add(hf::encoder(hf::kPooler));
      add(hf::kClassifier);
    }
    return out;
  };
  BertForMaskedLM mlm(c);
  BertForSequenceClassification cls(c);
  EXPECT_EQ(names_of(*mlm), built(true));
  EXPECT_EQ(names_of(*cls), built(false));

  const auto p = hf::parse_layer_parameter("bert.encoder.layer.12.attention.self.key.bias");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->prefix, "bert.");
  EXPECT_EQ(p->layer, 12);
  EXPECT_EQ(p->rest, "attention.self.key.bias");
  EXPECT_FALSE(hf::parse_layer_parameter("encoder.layer.x.output.dense.bias").has_value());
  EXPECT_FALSE(hf::parse_layer_parameter("bert.embeddings.LayerNorm.bias").has_value());
}

TEST(Model, SequenceLongerThanPositionsIsAnError) {
  BertModel model = load_bert_model(model_dir());
  Batch b{at::ones({1, 129}, at::kLong), at::Tensor(), at::Tensor()};
  EXPECT_ERROR_CONTAINS(model->forward(b), "sequence length 129", "max_position_embeddings 128");
}

TEST(Flops, CountsMatchHandComputedValues) {
  BertConfig c = BertConfig::preset("mini");
  // Per layer at T=128, H=256, I=1024: QKV 3*2*T*H*H, scores+context 2*2*T*T*H, out 2*T*H*H, FFN
  // 2*2*T*H*I.
  const double T = 128, H = 256, I = 1024;
  const double per_layer = 6 * T * H * H + 4 * T * T * H + 2 * T * H * H + 4 * T * H * I;
  EXPECT_DOUBLE_EQ(encoder_flops(c, 128), 4 * per_layer);
  EXPECT_DOUBLE_EQ(encoder_flops(c, 128, SubNet{1.0, 0.5}), 2 * per_layer);
  TensorMap w = load_weights(model_dir());
  int64_t total = 0;
  for (const auto& cc : count_parameters(w)) total += cc.parameters;
  int64_t expected = 0;
  for (const auto& [n, t] : w) expected += t.numel();
  EXPECT_EQ(total, expected);
}

}  // namespace
}  // namespace slimbert
