#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <utility>

#include "slimbert/infer/model.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/tensor_io.h"
#include "test_util.h"

namespace slimbert {
namespace {

using test::golden;
using test::golden_batch;
using test::max_diff;

const std::string& model_dir() {
  static const std::string dir = test::fixture("hf/model");
  return dir;
}

// Padding positions carry no meaning; compare the real tokens only.
double max_diff_unpadded(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask) {
  const at::Tensor m = mask.to(at::kBool).unsqueeze(-1);
  return ((a - b).abs() * m).max().item<double>();
}

TEST(InferenceModel, MatchesHuggingFaceGoldenOutputs) {
  const auto model = infer::InferenceModel::load(model_dir());
  ASSERT_TRUE(model->has_classifier());
  const infer::Output out = model->forward(golden_batch());
  EXPECT_LE(max_diff(out.last, golden().at("last_hidden_state")), 1e-5);
  EXPECT_LE(max_diff(out.pooled, golden().at("pooler_output")), 1e-5);
  EXPECT_LE(max_diff(out.logits, golden().at("cls_logits")), 1e-6);
}

TEST(InferenceModel, EverySubNetworkMatchesTheTrainingModel) {
  const auto model = infer::InferenceModel::load(model_dir());
  BertForSequenceClassification reference = load_classifier(model_dir());
  at::NoGradGuard no_grad;
  const Batch batch = golden_batch();
  for (double width : {1.0, 0.75, 0.5, 0.25})
    for (double depth : {1.0, 0.5}) {
      const SubNet subnet{width, depth};
      const Encoded expected = reference->bert->forward(batch, subnet);
      const infer::Output got = model->forward(batch, subnet);
      EXPECT_LE(max_diff_unpadded(got.last, expected.last(), batch.attention_mask), 1e-5)
          << "width " << width << " depth " << depth;
      EXPECT_LE(max_diff(got.logits, reference->logits(expected)), 1e-5)
          << "width " << width << " depth " << depth;
    }
}

TEST(InferenceModel, PrunedHeadsLoadAndMatch) {
  test::TempDir tmp;
  BertConfig config = load_config_dir(model_dir());
  config.pruned_heads = {{0, {1, 3}}, {1, {0}}};
  BertForSequenceClassification pruned(config);
  init_weights(*pruned, config, 7);
  pruned->eval();
  std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (int64_t i = 5; i < config.vocab_size; ++i) tokens.push_back("t" + std::to_string(i));
  const Tokenizer tokenizer(Vocab::from_tokens(tokens), TokenizerOptions{});
  save_checkpoint(tmp / "pruned", config, *pruned, tokenizer);
  const auto model = infer::InferenceModel::load(tmp / "pruned");
  at::NoGradGuard no_grad;
  const Batch batch = golden_batch();
  for (double width : {1.0, 0.5}) {
    const SubNet subnet{width, 1.0};
    EXPECT_LE(max_diff(model->forward(batch, subnet).logits, pruned->forward(batch, subnet)), 1e-5);
  }
}

TEST(InferenceModel, Int8StaysCloseToFloatAndRunsOnlyPackedWidths) {
  if (!infer::select_int8_engine()) GTEST_SKIP() << "no oneDNN quantized engine in this libtorch";
  const auto fp32 = infer::InferenceModel::load(model_dir());
  const auto int8 = infer::InferenceModel::load(model_dir(), {true, {1.0, 0.5}});
  const Batch batch = golden_batch();
  for (double width : {1.0, 0.5}) {
    const SubNet subnet{width, 1.0};
    ASSERT_TRUE(int8->supports(subnet));
    const infer::Output a = fp32->forward(batch, subnet), b = int8->forward(batch, subnet);
    // Quantizing the weights per row and the activations per call moves the hidden states by a
    // few percent of their scale (LayerNorm keeps them near unit variance), and no more.
    const double d = max_diff_unpadded(a.last, b.last, batch.attention_mask);
    EXPECT_GT(d, 0.0) << "int8 path not taken";
    EXPECT_LT(d, 0.25) << "width " << width;
    const double cos =
        at::cosine_similarity(a.last.flatten(0, 1), b.last.flatten(0, 1), 1).min().item<double>();
    EXPECT_GT(cos, 0.99) << "width " << width;
  }
  EXPECT_FALSE(int8->supports(SubNet{0.25, 1.0}));
  EXPECT_ERROR_CONTAINS(int8->forward(batch, SubNet{0.25, 1.0}), "not packed for 1 heads");
  EXPECT_LT(int8->weight_bytes(), fp32->weight_bytes());
}

// The int8 map computes exactly the product of its quantized operands: activations u8 over their
// range with a zero point, weights s8 per output row, the zero point taken out through the
// weights' row sums. The reference here does that arithmetic in double.
TEST(InferenceModel, Int8LinearIsTheExactProductOfItsQuantizedOperands) {
  if (!at::hasMKLDNN()) GTEST_SKIP() << "no oneDNN in this libtorch";
  at::manual_seed(3);
  const at::Tensor w = at::randn({96, 64}), b = at::randn({96});
  infer::ModelOptions int8;
  int8.int8 = true;
  const auto linear = infer::pack_linear(w, b, int8);
  const at::Tensor w_scale = w.abs().amax(1).clamp_min(1e-8).div(127.0);
  const at::Tensor qw = at::round(w / w_scale.unsqueeze(1)).clamp(-127, 127).to(at::kDouble);
  for (int64_t m : {1, 7, 128, 300}) {
    const at::Tensor x = at::randn({m, 64}) * 3 + 0.5;
    const infer::ActivationQuantization a = infer::quantize_activations(x);
    ASSERT_EQ(a.values.scalar_type(), at::kByte);
    EXPECT_GE(a.zero_point, 0);
    EXPECT_LE(a.zero_point, 255);
    const at::Tensor qx = a.values.to(at::kDouble) - static_cast<double>(a.zero_point);
    // Each activation within half a step of its quantized value.
    EXPECT_LE((qx * a.scale - x.to(at::kDouble)).abs().max().item<double>(), a.scale * 0.5001);
    const at::Tensor reference =
        qx.mm(qw.t()) * (w_scale.to(at::kDouble) * a.scale).unsqueeze(0) + b.to(at::kDouble);
    const at::Tensor y = (*linear)(x);
    EXPECT_LE((y.to(at::kDouble) - reference).abs().max().item<double>(),
              1e-5 * reference.abs().max().item<double>() + 1e-5)
        << m << " rows";
    // And it is close to the float product: int8 is an approximation of it, not another map.
    const at::Tensor exact = at::linear(x, w, b);
    EXPECT_LT((y - exact).abs().max().item<double>(), 0.05 * exact.abs().max().item<double>());
  }
  // Seven bits where the CPU's u8 x s8 products would saturate without VNNI.
  const at::Tensor x7 = at::randn({9, 64}) * 2 - 1;
  const infer::ActivationQuantization a7 = infer::quantize_activations(x7, 127);
  EXPECT_LE(a7.values.max().item<int64_t>(), 127);
  EXPECT_LE(a7.zero_point, 127);
  EXPECT_LE(((a7.values.to(at::kDouble) - static_cast<double>(a7.zero_point)) * a7.scale -
             x7.to(at::kDouble))
                .abs()
                .max()
                .item<double>(),
            a7.scale * 0.5001);
  const at::Tensor x3 = at::randn({2, 5, 64});
  EXPECT_EQ((*linear)(x3).sizes(), (std::vector<int64_t>{2, 5, 96}));
}

TEST(InferenceModel, OnednnGemmMatchesTheBlasPath) {
  const auto blas = infer::InferenceModel::load(model_dir());
  const auto onednn =
      infer::InferenceModel::load(model_dir(), {false, {1.0, 0.5}, infer::Gemm::kOnednn});
  const Batch batch = golden_batch();
  EXPECT_LE(max_diff(onednn->forward(batch).logits, golden().at("cls_logits")), 1e-5);
  for (double width : {1.0, 0.5}) {
    const SubNet subnet{width, 0.5};
    const infer::Output a = blas->forward(batch, subnet), b = onednn->forward(batch, subnet);
    EXPECT_LE(max_diff_unpadded(a.last, b.last, batch.attention_mask), 1e-5) << width;
  }
  // Every number of rows gets its own kernel (more than the 16 kept per map: some are rebuilt)
  // on the weights packed once.
  for (int64_t rows = 1; rows <= 2 * batch.input_ids.size(1); ++rows) {
    const int64_t b = rows <= batch.input_ids.size(1) ? 1 : 2;
    const int64_t t = (rows + b - 1) / b;
    if (t > batch.input_ids.size(1) || t * b != rows) continue;
    const Batch part{batch.input_ids.narrow(0, 0, b).narrow(1, 0, t),
                     batch.token_type_ids.narrow(0, 0, b).narrow(1, 0, t),
                     at::ones({b, t}, at::kLong)};
    EXPECT_LE(max_diff(blas->forward(part).last, onednn->forward(part).last), 1e-5) << rows;
  }
  EXPECT_FALSE(onednn->supports(SubNet{0.25, 1.0}));
  EXPECT_ERROR_CONTAINS(
      infer::InferenceModel::load(model_dir(), {true, {1.0}, infer::Gemm::kOnednn}),
      "--gemm onednn is the fp32 path");
}

TEST(InferenceModel, AutoGemmTimesBothEnginesAndSetsTheThreadsOfTheOneItPicks) {
  const BertConfig config = load_config_dir(model_dir());
  RuntimeConfig runtime;
  runtime.threads = 2;
  const infer::ModelOptions o =
      infer::configure_engine(config, {false, {1.0}, infer::Gemm::kAuto}, runtime);
  ASSERT_TRUE(o.measured.has_value());
  EXPECT_GT(o.measured->blas_ms, 0.0);
  EXPECT_GT(o.measured->onednn_ms, 0.0);
  const bool onednn = o.measured->onednn_speedup > 1.0;
  EXPECT_EQ(o.gemm, onednn ? infer::Gemm::kOnednn : infer::Gemm::kBlas);
  // oneDNN's products run on libtorch's pool, OpenBLAS's on its own threads.
  EXPECT_EQ(at::get_num_threads(), onednn ? 2 : 1);
  const auto model = infer::InferenceModel::load(model_dir(), o);
  EXPECT_EQ(model->gemm(), o.gemm);
  // What the measurement builds its layer with: weights in memory run as the same files do.
  const auto in_memory = infer::InferenceModel::from_weights(config, load_weights(model_dir()),
                                                             {false, {1.0}, o.gemm});
  EXPECT_TRUE(
      at::equal(in_memory->forward(golden_batch()).last, model->forward(golden_batch()).last));
  EXPECT_LE(max_diff(model->forward(golden_batch()).logits, golden().at("cls_logits")), 1e-5);
  // A chosen engine is not measured; int8 has its own and runs on libtorch's pool.
  const infer::ModelOptions fixed =
      infer::configure_engine(config, {false, {1.0}, infer::Gemm::kBlas}, runtime);
  EXPECT_FALSE(fixed.measured.has_value());
  EXPECT_EQ(at::get_num_threads(), 1);
  const infer::ModelOptions int8 =
      infer::configure_engine(config, {true, {1.0}, infer::Gemm::kAuto}, runtime);
  EXPECT_FALSE(int8.measured.has_value());
  EXPECT_EQ(int8.gemm, infer::Gemm::kBlas);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_ERROR_CONTAINS(
      infer::InferenceModel::load(model_dir(), {false, {1.0}, infer::Gemm::kAuto}),
      "resolved by configure_engine");
}

TEST(InferenceModel, BadInputsAreNamedErrors) {
  const auto model = infer::InferenceModel::load(model_dir());
  const int64_t vocab = model->config().vocab_size;
  EXPECT_ERROR_CONTAINS(model->forward(Batch{at::full({1, 4}, vocab, at::kLong), {}, {}}),
                        "outside the model's vocabulary");
  EXPECT_ERROR_CONTAINS(
      model->forward(Batch{at::ones({1, 4}, at::kLong), at::full({1, 4}, 5, at::kLong), {}}),
      "token type 5");
  EXPECT_ERROR_CONTAINS(model->forward(Batch{at::ones({1, 500}, at::kLong), {}, {}}),
                        "exceeds max_position_embeddings");
  test::TempDir tmp;
  EXPECT_ERROR_CONTAINS(infer::InferenceModel::load(tmp / "missing"), "not found");
}

}  // namespace
}  // namespace slimbert

namespace slimbert {
namespace {

// Rows of varied lengths with ids the fixture's vocabulary holds.
std::vector<Encoding> varied_rows(int64_t vocab) {
  std::vector<Encoding> rows;
  for (int64_t n : {7, 3, 12, 3, 9, 1, 12, 5}) {
    Encoding e;
    for (int64_t t = 0; t < n; ++t) {
      e.input_ids.push_back((n * 31 + t * 7) % vocab);
      e.token_type_ids.push_back(t >= n / 2 ? 1 : 0);
    }
    rows.push_back(e);
  }
  return rows;
}

TEST(Batching, LengthSortedBatchesKeepTheirRowAndTokenLimits) {
  const std::vector<Encoding> rows = varied_rows(100);
  for (const BatchLimits limits : {BatchLimits{3, 0}, BatchLimits{0, 24}, BatchLimits{2, 20},
                                   BatchLimits{0, 5}, BatchLimits{0, 0}}) {
    std::vector<size_t> seen;
    size_t last_len = 0;
    for (const auto& batch : length_sorted_batches(rows, limits)) {
      ASSERT_FALSE(batch.empty());
      size_t longest = 0;
      for (size_t i : batch) {
        EXPECT_GE(rows[i].input_ids.size(), last_len);  // shortest first, across batches too
        last_len = rows[i].input_ids.size();
        longest = std::max(longest, last_len);
        seen.push_back(i);
      }
      const auto n = static_cast<int64_t>(batch.size());
      if (limits.max_rows > 0) {
        EXPECT_LE(n, limits.max_rows);
      }
      // A row longer than the token budget is a batch of its own.
      if (limits.max_tokens > 0 && n > 1) {
        EXPECT_LE(n * static_cast<int64_t>(longest), limits.max_tokens);
      }
    }
    std::sort(seen.begin(), seen.end());
    for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(seen[i], i);
  }
  // Stable: rows of equal length keep their input order.
  const auto all = length_sorted_batches(rows, {0, 0});
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], (std::vector<size_t>{5, 1, 3, 7, 0, 4, 2, 6}));
}

// Batched and padded in any grouping, every row's outputs are those of the row run alone.
TEST(Batching, RunRowsEqualsEachRowAlone) {
  const auto model = infer::InferenceModel::load(model_dir());
  const std::vector<Encoding> rows = varied_rows(model->config().vocab_size);
  const SubNet subnet{0.5, 0.5};
  infer::RowWants all;
  all.poolings = {infer::Pooling::kCls, infer::Pooling::kMean, infer::Pooling::kMax,
                  infer::Pooling::kLastToken};
  const infer::RowOutputs batched = infer::run_rows(*model, rows, subnet, 0, {0, 30}, all);
  ASSERT_EQ(batched.cls.size(0), static_cast<int64_t>(rows.size()));
  for (size_t i = 0; i < rows.size(); ++i) {
    const infer::RowOutputs alone = infer::run_rows(*model, {rows[i]}, subnet, 0, {1, 0}, all);
    const auto r = static_cast<int64_t>(i);
    EXPECT_LT((batched.cls[r] - alone.cls[0]).abs().max().item<double>(), 1e-5) << i;
    EXPECT_LT((batched.mean[r] - alone.mean[0]).abs().max().item<double>(), 1e-5) << i;
    EXPECT_LT((batched.max[r] - alone.max[0]).abs().max().item<double>(), 1e-5) << i;
    EXPECT_LT((batched.last[r] - alone.last[0]).abs().max().item<double>(), 1e-5) << i;
    EXPECT_EQ(batched.logits.defined(), model->has_classifier());
    // Alone there is no padding: max and last token are plain reductions of the last layer.
    const infer::Output o = model->forward(collate({rows[i]}, {0}, 0), subnet);
    EXPECT_LT((alone.max[0] - o.last[0].amax(0)).abs().max().item<double>(), 1e-6) << i;
    EXPECT_LT((alone.last[0] - o.last[0][-1]).abs().max().item<double>(), 1e-6) << i;
    EXPECT_TRUE(alone.pooled(infer::Pooling::kLastToken).equal(alone.last));
    // Only what was asked for is pooled.
    const infer::RowOutputs logits_only = infer::run_rows(*model, {rows[i]}, subnet, 0, {1, 0});
    EXPECT_FALSE(logits_only.cls.defined());
    EXPECT_THROW(std::as_const(logits_only).pooled(infer::Pooling::kMean), InputError);
  }
  for (const char* name : {"cls", "mean", "max", "lasttoken"})
    EXPECT_STREQ(infer::pooling_name(infer::parse_pooling(name)), name);
  EXPECT_THROW(infer::parse_pooling("weightedmean"), InputError);
  // Unit rows, and a zero row stays zero.
  const at::Tensor unit =
      infer::normalize(at::cat({batched.mean, at::zeros({1, batched.mean.size(1)})}));
  EXPECT_NEAR(unit[0].norm().item<double>(), 1.0, 1e-6);
  EXPECT_EQ(unit[-1].abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace slimbert
