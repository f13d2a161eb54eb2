// WID: identity compactors equal the teacher, targets and their errors, the mask schedule,
// gradient surgery by hand, merge equivalence in both strategies (through the exported HF
// checkpoint), and exact resume.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mlm_world.h"
#include "slimbert/core/fs.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/wid/wid.h"
#include "test_util.h"

namespace slimbert {
namespace fs = std::filesystem;
namespace {

using test::world;

// A padded batch over the world's vocabulary: row 1 has 6 padding positions.
Batch sample_batch() {
  at::manual_seed(5);
  at::Tensor ids = at::randint(5, 64, {3, 20}, at::kLong);
  at::Tensor mask = at::ones({3, 20}, at::kLong);
  mask[1].narrow(0, 14, 6).zero_();
  ids[1].narrow(0, 14, 6).zero_();
  return {ids, at::Tensor(), mask};
}

using test::max_diff;

TEST(Wid, IdentityCompactorsEqualTheTeacher) {
  BertForMaskedLM teacher = load_masked_lm(world().init);
  WidModel model(load_masked_lm(world().init));
  model->eval();
  const Batch batch = sample_batch();
  const at::Tensor want = teacher->bert->forward(batch).last();
  const at::Tensor got = model->forward(batch, WidMasks{});
  EXPECT_LE(max_diff(got, want), 1e-6);
  const at::Tensor rows = want.reshape({-1, want.size(-1)});
  EXPECT_LE(max_diff(model->logits(rows, WidMasks{}), teacher->logits(rows)), 1e-5);
  // Every linear has two compactors plus the embedding one; all start as the identity.
  EXPECT_EQ(model->compactors.size(), 1u + 2 * (6 * 2 + 1));
  for (const auto& c : model->compactors)
    EXPECT_TRUE(at::equal(c.weight, at::eye(c.weight.size(0)))) << c.name;
}

TEST(Wid, TargetsResolveToValidShapesOrListThem) {
  const BertConfig base = BertConfig::preset("base");
  // Parameter counts of ALGORITHMS.md §A.10 (which include the pooler and a 2-way classifier).
  auto with_heads = [](const BertConfig& c) {
    const double h = static_cast<double>(c.hidden_size);
    return static_cast<double>(encoder_parameters(c)) + h * h + h + 2 * h + 2;
  };
  EXPECT_NEAR(with_heads(base) / 1e6, 109.5, 0.05);
  const BertConfig wid55 = student_config(base, 516, WidStrategy::kDim);
  EXPECT_EQ(wid55.num_attention_heads, 12);
  EXPECT_EQ(wid55.attention_head_size(), 43);
  EXPECT_EQ(wid55.intermediate_size, 2064);
  EXPECT_NEAR(with_heads(wid55) / 1e6, 54.7, 0.05);
  const BertConfig head55 = student_config(base, 512, WidStrategy::kHead);
  EXPECT_EQ(head55.num_attention_heads, 8);
  EXPECT_EQ(head55.attention_head_size(), 64);
  EXPECT_NEAR(with_heads(head55) / 1e6, 54.0, 0.05);
  EXPECT_NEAR(with_heads(student_config(base, 192, WidStrategy::kDim)) / 1e6, 11.3, 0.05);

  WidTarget preset;
  preset.preset = "wid55";
  EXPECT_EQ(resolve_target(base, WidStrategy::kDim, preset), 516);
  EXPECT_EQ(resolve_target(base, WidStrategy::kHead, preset), 512);
  preset.preset = "wid11";
  EXPECT_EQ(resolve_target(base, WidStrategy::kDim, preset), 192);
  EXPECT_EQ(resolve_target(base, WidStrategy::kHead, preset), 192);

  // A budget picks the largest student within it.
  WidTarget budget;
  budget.parameters = encoder_parameters(wid55);
  EXPECT_EQ(resolve_target(base, WidStrategy::kDim, budget), 516);
  budget.parameters -= 1;
  EXPECT_EQ(resolve_target(base, WidStrategy::kDim, budget), 504);

  // The formula counts what the model holds.
  const BertConfig tiny = test::tiny_config(64, 64);
  int64_t held = 0;
  for (const auto& p : BertModel(tiny, false)->parameters()) held += p.numel();
  EXPECT_EQ(encoder_parameters(tiny), held);

  WidTarget bad;
  bad.hidden = 500;
  EXPECT_ERROR_CONTAINS(resolve_target(base, WidStrategy::kDim, bad), ("not reachable"),
                        ("valid hidden sizes for the dim strategy: 756, 744"), ("516"));
  bad.hidden = 768;
  EXPECT_ERROR_CONTAINS(resolve_target(base, WidStrategy::kHead, bad), ("not smaller"),
                        ("704, 640, 576, 512, 448, 384, 320, 256, 192, 128, 64"));
  WidTarget tiny_budget;
  tiny_budget.parameters = 1000;
  EXPECT_ERROR_CONTAINS(resolve_target(base, WidStrategy::kDim, tiny_budget),
                        ("below the smallest student"));
  tiny_budget.parameters = 200000000;
  EXPECT_ERROR_CONTAINS(resolve_target(base, WidStrategy::kDim, tiny_budget),
                        ("not smaller than the teacher"));
  WidTarget two = bad;
  two.preset = "wid11";
  EXPECT_ERROR_CONTAINS(resolve_target(base, WidStrategy::kDim, two), ("exactly one"));
}

// Compactors perturbed so that scores differ.
WidModel perturbed_model(uint64_t seed) {
  WidModel model(load_masked_lm(world().init));
  at::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (auto& c : model->compactors) c.weight.add_(at::randn_like(c.weight) * 0.1);
  return model;
}

TEST(Wid, MaskScheduleGrowsToExactTargetSizes) {
  WidModel model = perturbed_model(1);
  // Tiny teacher: hidden 32 = 2 heads x 16, FFN 64. Target hidden 16.
  WidSchedule s;
  s.target_hidden = 16;
  s.w_step = 10;
  EXPECT_EQ(mask_steps_to_target(model->config(), s), 16);
  for (int64_t k = 1; k <= 18; ++k) {
    const WidMasks m = compute_masks(*model, s, k * s.w_step);
    const int64_t per_head = std::min<int64_t>(8, k);  // c = 8, growing by max(1, c/8) = 1
    EXPECT_EQ(m.residual.sum().item<int64_t>(), 32 - 2 * per_head) << k;
    for (int64_t l = 0; l < 2; ++l) {
      const at::Tensor& a = m.attention[static_cast<size_t>(l)];
      // The same number removed inside each head.
      EXPECT_EQ(a.narrow(0, 0, 16).sum().item<int64_t>(), 16 - per_head);
      EXPECT_EQ(a.narrow(0, 16, 16).sum().item<int64_t>(), 16 - per_head);
      EXPECT_EQ(m.ffn[static_cast<size_t>(l)].sum().item<int64_t>(),
                64 - std::min<int64_t>(32, 2 * k));
    }
  }
  // head: one head per two mask steps; residual chunks as the reference, or globally ("all").
  s.strategy = WidStrategy::kHead;
  EXPECT_EQ(compute_masks(*model, s, 10).attention[0].sum().item<int64_t>(), 32);
  WidMasks m = compute_masks(*model, s, 20);
  for (const auto& a : m.attention) {
    EXPECT_EQ(a.sum().item<int64_t>(), 16);
    EXPECT_TRUE(a.narrow(0, 0, 16).all().item<bool>() || a.narrow(0, 16, 16).all().item<bool>());
  }
  EXPECT_TRUE(m.residual.narrow(0, 0, 16).all().item<bool>() ||
              m.residual.narrow(0, 16, 16).all().item<bool>());
  s.residual_score = ResidualScore::kAll;
  m = compute_masks(*model, s, 200);
  EXPECT_EQ(m.residual.sum().item<int64_t>(), 16);

  // Masks round-trip through the checkpoint JSON.
  const WidMasks back = WidMasks::from_json(m.to_json(), model->config(), "test");
  EXPECT_TRUE(at::equal(back.residual, m.residual));
  EXPECT_TRUE(at::equal(back.ffn[1], m.ffn[1]));
  nlohmann::json broken = m.to_json();
  broken["ffn_removed"][0].push_back(64);
  EXPECT_ERROR_CONTAINS(WidMasks::from_json(broken, model->config(), "state.json"),
                        ("state.json: ffn_removed"), ("64 is outside 0..63"));
}

TEST(Wid, TruncationKeepsTheLargestWeightsAtTheTargetShape) {
  WidModel model(load_masked_lm(world().init));
  {
    at::NoGradGuard no_grad;  // make FFN neuron 5 of layer 1 and residual dim 3 the largest
    model->param("bert.encoder.layer.1.intermediate.dense.weight")[5].mul_(100);
    model->param("bert.embeddings.word_embeddings.weight").select(1, 3).mul_(100);
  }
  WidSchedule s;
  s.target_hidden = 8;
  const WidMasks m = magnitude_masks(*model, s);
  EXPECT_EQ(m.residual.sum().item<int64_t>(), 8);
  EXPECT_TRUE(m.residual[3].item<bool>());
  EXPECT_EQ(m.ffn[1].sum().item<int64_t>(), 16);
  EXPECT_TRUE(m.ffn[1][5].item<bool>());
  for (const auto& a : m.attention) {  // dim strategy: 4 of 16 dims in each head
    EXPECT_EQ(a.narrow(0, 0, 16).sum().item<int64_t>(), 4);
    EXPECT_EQ(a.narrow(0, 16, 16).sum().item<int64_t>(), 4);
  }
  // With identity compactors the merge is plain index selection of the teacher's weights.
  const auto [config, student] = merge_student(*model, m, WidStrategy::kDim);
  const at::Tensor ih = m.residual.nonzero().view(-1), i5 = m.ffn[1].nonzero().view(-1);
  EXPECT_TRUE(
      at::equal(student->bert->embeddings->word_embeddings->weight,
                model->param("bert.embeddings.word_embeddings.weight").index_select(1, ih)));
  const TensorMap w = state_dict(*student);
  EXPECT_TRUE(at::allclose(w.at("bert.encoder.layer.1.intermediate.dense.weight"),
                           model->param("bert.encoder.layer.1.intermediate.dense.weight")
                               .index_select(0, i5)
                               .index_select(1, ih)));
}

// --mask-scores weights reads the compacted weights R W L: the teacher's magnitudes at first, and
// whatever the compactors do to them later. Compactor scores see only the compactors' own norms.
TEST(Wid, WeightScoresFollowTheCompactedWeights) {
  WidModel model(load_masked_lm(world().init));
  const std::string layer0 = "bert.encoder.layer.0.", layer1 = "bert.encoder.layer.1.";
  {
    at::NoGradGuard no_grad;  // teacher: residual dim 29 and layer-0 FFN neuron 40 tiny
    model->param("bert.embeddings.word_embeddings.weight").select(1, 29).mul_(1e-3);
    for (const std::string& l : {layer0, layer1}) {
      for (const char* reads : {"attention.self.query", "attention.self.key",
                                "attention.self.value", "intermediate.dense"})
        model->param(l + reads + ".weight").select(1, 29).mul_(1e-3);
      for (const char* writes : {"attention.output.dense", "output.dense"})
        model->param(l + writes + ".weight")[29].mul_(1e-3);
    }
    model->param(layer0 + "intermediate.dense.weight")[40].mul_(1e-3);
    model->param(layer0 + "output.dense.weight").select(1, 40).mul_(1e-3);
    // Compactors: layer-1 FFN neuron 7 switched off on both sides of it.
    model->compactor_out(layer1 + "intermediate.dense")[7].zero_();
    model->compactor_in(layer1 + "output.dense").select(1, 7).zero_();
  }
  WidSchedule s;
  s.target_hidden = 16;  // hidden 32 = 2 heads x 16, FFN 64
  s.w_step = 1;
  s.scores = MaskScores::kWeights;
  WidMasks m = compute_masks(*model, s, 1);  // first mask step: 2 residual dims, 2 neurons
  EXPECT_EQ(m.residual.sum().item<int64_t>(), 30);
  EXPECT_FALSE(m.residual[29].item<bool>());
  EXPECT_FALSE(m.ffn[0][40].item<bool>());
  EXPECT_FALSE(m.ffn[1][7].item<bool>());
  // Identity compactors: the compactor norms tie, so the lowest indices go, whatever the weights.
  s.scores = MaskScores::kCompactors;
  m = compute_masks(*model, s, 1);
  EXPECT_TRUE(m.residual[29].item<bool>());
  EXPECT_TRUE(m.ffn[0][40].item<bool>());
  EXPECT_FALSE(m.ffn[1][7].item<bool>());  // its L_2 column is zero: the one thing they see
  // At the target, weight scores are the truncation baseline's masks.
  s.scores = MaskScores::kWeights;
  const WidMasks at_target = compute_masks(*model, s, mask_steps_to_target(model->config(), s));
  EXPECT_EQ(at_target.to_json(), magnitude_masks(*model, s).to_json());
  EXPECT_EQ(at_target.residual.sum().item<int64_t>(), 16);
}

TEST(Wid, MasksAreSharedAsTheAlignmentStrategySays) {
  WidModel model(load_masked_lm(world().init));
  auto ref_of = [&](const std::string& name) {
    for (const auto& c : model->compactors)
      if (c.name == name) return std::pair{c.mask, c.output_side};
    for (const auto& p : model->masked_parameters)
      if (p.name == name) return std::pair{p.mask, true};
    ADD_FAILURE() << "no " << name;
    return std::pair{MaskRef{}, false};
  };
  auto is = [&](const std::string& name, MaskKind kind, int64_t layer, bool output_side) {
    const auto [ref, side] = ref_of(name);
    EXPECT_EQ(static_cast<int>(ref.kind), static_cast<int>(kind)) << name;
    if (kind != MaskKind::kResidual) {
      EXPECT_EQ(ref.layer, layer) << name;
    }
    EXPECT_EQ(side, output_side) << name;
  };
  for (int64_t l = 0; l < 2; ++l) {
    const std::string c = "compactors.encoder.layer." + std::to_string(l) + ".";
    const std::string b = "bert.encoder.layer." + std::to_string(l) + ".";
    for (const char* qkv : {"query", "key", "value"}) {
      is(c + "attention.self." + qkv + ".in", MaskKind::kResidual, l, false);
      is(c + "attention.self." + qkv + ".out", MaskKind::kAttention, l, true);
      is(b + "attention.self." + qkv + ".bias", MaskKind::kAttention, l, true);
    }
    is(c + "attention.output.dense.in", MaskKind::kAttention, l, false);
    is(c + "attention.output.dense.out", MaskKind::kResidual, l, true);
    is(c + "intermediate.dense.in", MaskKind::kResidual, l, false);
    is(c + "intermediate.dense.out", MaskKind::kFfn, l, true);
    is(c + "output.dense.in", MaskKind::kFfn, l, false);
    is(c + "output.dense.out", MaskKind::kResidual, l, true);
    is(b + "attention.output.LayerNorm.weight", MaskKind::kResidual, l, true);
    is(b + "output.LayerNorm.bias", MaskKind::kResidual, l, true);
    is(b + "intermediate.dense.bias", MaskKind::kFfn, l, true);
  }
  is("compactors.embeddings", MaskKind::kResidual, 0, true);
  is("bert.embeddings.LayerNorm.weight", MaskKind::kResidual, 0, true);
  is("compactors.predictions.transform.dense.out", MaskKind::kResidual, 0, true);
}

TEST(Wid, GradientSurgeryFollowsTheReferenceRule) {
  WidModel model = perturbed_model(2);
  WidSchedule s;
  s.target_hidden = 16;
  s.w_step = 1;
  const WidMasks masks = compute_masks(*model, s, 16);
  std::map<std::string, at::Tensor> moments;
  auto exp_avg = [&](const std::string& name) -> at::Tensor& {
    auto it = moments.find(name);
    if (it == moments.end()) it = moments.emplace(name, at::zeros_like(model->param(name))).first;
    return it->second;
  };
  auto set_grads = [&] {
    for (auto& p : model->parameters()) p.mutable_grad() = at::ones_like(p);
  };
  SurgeryOptions o;                             // lambda 20
  const Compactor& out = model->compactors[2];  // an output-side (row) compactor
  const Compactor& in = model->compactors[1];   // an input-side (column) compactor
  ASSERT_TRUE(out.output_side);
  ASSERT_FALSE(in.output_side);

  // Before pruning: plain L2 (g + p) on compactors, nothing else touched.
  set_grads();
  apply_gradient_surgery(*model, masks, false, o, exp_avg);
  EXPECT_LE(max_diff(out.weight.grad(), 1 + out.weight), 1e-7);
  EXPECT_TRUE(at::equal(model->masked_parameters[0].param.grad(),
                        at::ones_like(model->masked_parameters[0].param)));
  EXPECT_TRUE(moments.empty());

  set_grads();
  apply_gradient_surgery(*model, masks, true, o, exp_avg);
  const at::Tensor removed_rows = ~mask_of(masks, out.mask);
  const at::Tensor rows = removed_rows.nonzero().view(-1),
                   kept = (~removed_rows).nonzero().view(-1);
  ASSERT_GT(rows.numel(), 0);
  // Removed rows: gradient min(lambda, 1) p and first moment 0.1 (lambda - 1) p; kept: untouched.
  EXPECT_TRUE(at::equal(out.weight.grad().index_select(0, rows), out.weight.index_select(0, rows)));
  EXPECT_TRUE(at::equal(out.weight.grad().index_select(0, kept),
                        at::ones_like(out.weight).index_select(0, kept)));
  EXPECT_LE(max_diff(moments.at(out.name).index_select(0, rows),
                     out.weight.index_select(0, rows) * (0.1 * 19)),
            1e-6);
  EXPECT_EQ(moments.at(out.name).index_select(0, kept).abs().max().item<double>(), 0.0);
  // Input-side compactors are pruned by columns.
  const at::Tensor cols = (~mask_of(masks, in.mask)).nonzero().view(-1);
  EXPECT_TRUE(at::equal(in.weight.grad().index_select(1, cols), in.weight.index_select(1, cols)));
  // Masked LayerNorm/bias vectors follow the same rule.
  const MaskedParameter& ln = model->masked_parameters[0];
  const at::Tensor ln_removed = (~mask_of(masks, ln.mask)).nonzero().view(-1);
  EXPECT_TRUE(
      at::equal(ln.param.grad().index_select(0, ln_removed), ln.param.index_select(0, ln_removed)));
}

// The world's teacher with query/key weights scaled up: sharp attention, so that a wrong
// attention scale in the student shows (random init gives near-uniform attention).
const std::string& sharp_teacher() {
  static const std::string dir = [] {
    const std::string out = world().dir / "sharp-teacher";
    BertForMaskedLM m = load_masked_lm(world().init);
    {
      at::NoGradGuard no_grad;
      for (auto& p : m->named_parameters())
        if (p.key().find(".query.") != std::string::npos ||
            p.key().find(".key.") != std::string::npos)
          p.value().mul_(4.0);
    }
    save_checkpoint(out, m->bert->config(), *m, world().tokenizer);
    return out;
  }();
  return dir;
}

struct WidRun {
  WidOptions options;
  WidResult result;
};

// 20 steps on the sharp teacher, the target (hidden 16) at step 16.
WidOptions wid_options(const std::string& out, WidStrategy strategy, ResidualScore score,
                       int64_t stop_after = 0, bool resume = false, const std::string& teacher = "",
                       MaskScores scores = MaskScores::kCompactors, double zero_by = 0) {
  WidOptions o;
  o.train = world().options(out);
  o.train.init_dir = teacher.empty() ? sharp_teacher() : teacher;
  o.train.steps = 20;
  o.train.lr = 1e-3;
  o.train.warmup_fraction = 0.1;
  o.train.save_every = 10;
  o.train.eval_every = 10;
  o.train.log_every = 5;
  o.train.clip = 0;
  o.train.stop_after = stop_after;
  o.train.resume = resume;
  o.schedule.strategy = strategy;
  o.schedule.residual_score = score;
  o.schedule.scores = scores;
  o.schedule.w_step = 1;
  o.schedule.zero_by = zero_by;
  o.target.hidden = 16;
  o.compactor_lr = 5e-3;
  return o;
}

WidRun run_wid(const std::string& out, WidStrategy strategy, ResidualScore score,
               int64_t stop_after = 0, bool resume = false, const std::string& teacher = "",
               MaskScores scores = MaskScores::kCompactors, double zero_by = 0) {
  WidRun r;
  r.options = wid_options(out, strategy, score, stop_after, resume, teacher, scores, zero_by);
  r.result = wid_train(r.options);
  return r;
}

// Loads a WID checkpoint the way `wid merge` does.
std::pair<WidModel, WidMasks> load_wid_checkpoint(const std::string& dir, const BertConfig& c) {
  WidModel model(BertForMaskedLM{c});
  load_state(*model, load_weights(dir), dir);
  const auto state = nlohmann::json::parse(read_file(dir + "/trainer_state/state.json"));
  return {model, WidMasks::from_json(state.at("wid").at("masks"), c, dir)};
}

void expect_merge_equivalence(WidStrategy strategy, ResidualScore score, const std::string& out,
                              MaskScores scores = MaskScores::kCompactors) {
  const WidRun run = run_wid(out, strategy, score, 0, false, "", scores);
  ASSERT_TRUE(run.result.train.finished);
  const BertConfig teacher = load_config_dir(sharp_teacher());
  auto [model, masks] =
      load_wid_checkpoint(run.options.train.out_dir + "/checkpoints/step-0000020", teacher);
  // The exported student, through the HF-format loader.
  BertForMaskedLM student = load_masked_lm(run.result.student_dir);
  const BertConfig& sc = student->bert->config();
  EXPECT_EQ(sc.hidden_size, 16);
  EXPECT_EQ(sc.intermediate_size, 32);
  EXPECT_EQ(sc.num_attention_heads, strategy == WidStrategy::kDim ? 2 : 1);
  EXPECT_EQ(sc.attention_head_size(), strategy == WidStrategy::kDim ? 8 : 16);
  EXPECT_FALSE(sc.attention_head_size_override.has_value());

  const Batch batch = sample_batch();
  model->eval();
  const at::Tensor unmerged_before = model->forward(batch, masks);
  EXPECT_GT(largest_removed_entry(*model, masks), 1e-6);  // twenty steps do not finish the pull
  zero_removed(*model, masks);
  // What is left removed and non-zero: the masked biases and LayerNorms.
  double left = 0;
  for (const auto& mp : model->masked_parameters)
    left =
        std::max(left, mp.param.masked_select(~mask_of(masks, mp.mask)).abs().max().item<double>());
  EXPECT_EQ(largest_removed_entry(*model, masks), left);
  const at::Tensor unmerged = model->forward(batch, masks);
  const at::Tensor merged = student->bert->forward(batch).last();
  const at::Tensor kept = masks.residual.nonzero().view(-1);
  // The bound. 1e-5 holds here; on libtorch 2.11 with one thread per test it did not.
  EXPECT_LE(max_diff(merged, unmerged.index_select(-1, kept)), 1e-4);
  // Training did move the compactors: zeroing the removed parts is not a no-op...
  EXPECT_GT(max_diff(unmerged_before, unmerged), 1e-6);
  // ...and the MLM heads agree too (the tied decoder through the embedding compactor).
  const at::Tensor rows = unmerged.reshape({-1, unmerged.size(-1)});
  EXPECT_LE(max_diff(student->logits(merged.reshape({-1, 16})), model->logits(rows, masks)), 1e-4);

  // The validation loss reported for the student is the student's: the zeroed compactor
  // model's on the same batches, not the (unzeroed) training model's.
  const PretrainOptions& t = run.options.train;
  const MlmValidation zeroed = evaluate_mlm(
      *model,
      [&](const MlmBatch& b) {
        const Batch in{b.input_ids, at::Tensor(), b.attention_mask};
        return mlm_loss(model->forward(in, masks), b,
                        [&](const at::Tensor& r) { return model->logits(r, masks); });
      },
      ShardSet::open(t.shards_dir, "validation"), t.batch_size, t.eval_batches,
      mlm_masking(world().tokenizer, teacher));
  ASSERT_TRUE(std::isfinite(zeroed.loss));
  EXPECT_NEAR(run.result.student_validation.loss, zeroed.loss, 1e-4);
  // Logits within 1e-4 may still flip a near-tie argmax: allow a token or two.
  EXPECT_NEAR(run.result.student_validation.accuracy, zeroed.accuracy, 0.01);
}

TEST(Wid, MergedStudentEqualsTheZeroedCompactorModelDim) {
  expect_merge_equivalence(WidStrategy::kDim, ResidualScore::kReference, "wid-dim");
}
TEST(Wid, MergedStudentEqualsTheZeroedCompactorModelHead) {
  expect_merge_equivalence(WidStrategy::kHead, ResidualScore::kReference, "wid-head");
}
TEST(Wid, MergedStudentEqualsTheZeroedCompactorModelAllResidualScores) {
  expect_merge_equivalence(WidStrategy::kDim, ResidualScore::kAll, "wid-all");
}
TEST(Wid, MergedStudentEqualsTheZeroedCompactorModelWeightScores) {
  expect_merge_equivalence(WidStrategy::kDim, ResidualScore::kReference, "wid-weights",
                           MaskScores::kWeights);
  expect_merge_equivalence(WidStrategy::kHead, ResidualScore::kReference, "wid-weights-head",
                           MaskScores::kWeights);
}

TEST(Wid, ResumedRunEqualsUninterruptedRunAndMergeCommandEqualsTheTrainer) {
  const WidRun straight = run_wid("wid-straight", WidStrategy::kDim, ResidualScore::kReference);
  const WidRun first =
      run_wid("wid-split", WidStrategy::kDim, ResidualScore::kReference, /*stop_after=*/10);
  EXPECT_FALSE(first.result.train.finished);
  const WidRun second = run_wid("wid-split", WidStrategy::kDim, ResidualScore::kReference, 0,
                                /*resume=*/true);
  ASSERT_TRUE(second.result.train.finished);
  const TensorMap a = load_weights(straight.result.student_dir);
  test::expect_same_weights(a, load_weights(second.result.student_dir));

  // `wid merge` of the last checkpoint writes the same student.
  const std::string merged = world().dir / "wid-merged";
  wid_merge(straight.options.train.out_dir + "/checkpoints/step-0000020", merged, false);
  test::expect_same_weights(a, load_weights(merged));

  // Resuming with other options is refused.
  WidOptions other = straight.options;
  other.train.resume = true;
  other.train.steps = 30;
  EXPECT_ERROR_CONTAINS(wid_train(other), "steps 20 -> 30",
                        "resume with the options it was started with");
  other = straight.options;
  other.train.resume = true;
  other.target.hidden = 20;
  EXPECT_ERROR_CONTAINS(wid_train(other), ("trained with strategy dim, target 16"),
                        ("resume with the same options"));
  other = straight.options;
  other.train.resume = true;
  other.schedule.scores = MaskScores::kWeights;
  EXPECT_ERROR_CONTAINS(wid_train(other), ("mask scores from compactors"),
                        ("resume with the same options"));
}

TEST(Wid, ZeroByEndsWithTheModelItTrainedAndResumesExactly) {
  // Target at step 16 of 20; --zero-by 0.5: removed entries at zero from step 18 on.
  const auto run = [](const std::string& out, int64_t stop_after, bool resume) {
    return run_wid(out, WidStrategy::kDim, ResidualScore::kReference, stop_after, resume, "",
                   MaskScores::kWeights, 0.5);
  };
  const WidRun straight = run("wid-zero", 0, false);
  ASSERT_TRUE(straight.result.train.finished);
  const BertConfig teacher = load_config_dir(sharp_teacher());
  auto [model, masks] =
      load_wid_checkpoint(straight.options.train.out_dir + "/checkpoints/step-0000020", teacher);
  EXPECT_EQ(largest_removed_entry(*model, masks), 0.0);
  // Nothing is left for the merge to drop: the student validates as the model trained on.
  EXPECT_NEAR(straight.result.student_validation.loss, straight.result.train.validation_loss, 1e-4);
  // Before the ramp (step 10; the pull alone) they were far from zero.
  auto [half, half_masks] =
      load_wid_checkpoint(straight.options.train.out_dir + "/checkpoints/step-0000010", teacher);
  EXPECT_GT(largest_removed_entry(*half, half_masks), 1e-3);

  const WidRun first = run("wid-zero-split", 17, false);  // stops inside the ramp
  EXPECT_FALSE(first.result.train.finished);
  const WidRun second = run("wid-zero-split", 0, true);
  ASSERT_TRUE(second.result.train.finished);
  test::expect_same_weights(load_weights(straight.result.student_dir),
                            load_weights(second.result.student_dir));

  WidOptions other = straight.options;
  other.train.resume = true;
  other.schedule.zero_by = 0;
  EXPECT_ERROR_CONTAINS(wid_train(other), ("zero-by 0.5"), ("resume with the same options"));
  other.train.resume = false;
  other.schedule.zero_by = 1.5;
  EXPECT_ERROR_CONTAINS(wid_train(other), ("--zero-by 1.5"), ("0 to 1"));
}

TEST(Wid, AMergeThatDropsLiveDimsIsReported) {
  // No pull (lambda 0: the removed entries keep what they had) one step past the target: the
  // removed dims are still in use when the merge drops them. (With the reference's pull, this
  // tiny teacher hardly uses them: its students validate within 0.003 of the compactor model.)
  WidOptions o = wid_options("wid-live", WidStrategy::kDim, ResidualScore::kReference);
  o.train.steps = 17;
  o.surgery.lambda = 0;
  testing::internal::CaptureStderr();
  const WidResult r = wid_train(o);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(r.train.finished);
  EXPECT_GT(r.student_validation.loss, r.train.validation_loss + 0.02);
  EXPECT_NE(err.find("wid: warning: the merge raises the validation loss by"), std::string::npos)
      << err;
  EXPECT_NE(err.find("--zero-by"), std::string::npos) << err;
  // Every validation line also scores the student the merge would give then (removed entries
  // zeroed for the evaluation, and restored: training goes on with them).
  const auto validations = [](const std::string& out) {
    std::vector<nlohmann::json> v;
    std::istringstream lines(read_file(out + "/metrics.jsonl"));
    for (std::string line; std::getline(lines, line);)
      if (auto j = nlohmann::json::parse(line); j.value("event", "") == "validation")
        v.push_back(j);
    return v;
  };
  const auto lines = validations(o.train.out_dir);
  ASSERT_EQ(lines.size(), 2u);  // steps 10 and 17
  EXPECT_TRUE(lines[0].contains("student_loss")) << lines[0].dump();
  EXPECT_EQ(lines[1].at("loss").get<double>(), r.train.validation_loss);
  EXPECT_NEAR(lines[1].at("student_loss").get<double>(), r.student_validation.loss, 1e-4);
  const BertConfig teacher = load_config_dir(sharp_teacher());
  auto [live, live_masks] =
      load_wid_checkpoint(o.train.out_dir + "/checkpoints/step-0000017", teacher);
  EXPECT_GT(largest_removed_entry(*live, live_masks), 0.1);
  // ...exactly: without validations, the run trains the same weights.
  WidOptions quiet_run = o;
  quiet_run.train.out_dir = world().dir / "wid-live-no-eval";
  quiet_run.train.eval_every = 0;
  testing::internal::CaptureStderr();
  const WidResult unvalidated = wid_train(quiet_run);
  testing::internal::GetCapturedStderr();
  test::expect_same_weights(load_weights(r.student_dir), load_weights(unvalidated.student_dir));
  // The same run with the ramp ends on its student, and says nothing.
  o.train.out_dir = world().dir / "wid-live-zero";
  o.schedule.zero_by = 1;
  testing::internal::CaptureStderr();
  const WidResult z = wid_train(o);
  const std::string quiet = testing::internal::GetCapturedStderr();
  EXPECT_NEAR(z.student_validation.loss, z.train.validation_loss, 1e-4);
  EXPECT_EQ(quiet.find("wid: warning"), std::string::npos) << quiet;
  EXPECT_NEAR(validations(o.train.out_dir).back().at("student_loss").get<double>(),
              z.train.validation_loss, 1e-4);
}

TEST(Wid, TrainingOnTheGpuEqualsTheCpuAndResumesThere) {
  SKIP_WITHOUT_CUDA();
  test::TempDir dir;
  const std::string teacher = test::without_dropout(sharp_teacher(), dir / "teacher");
  const c10::Device gpu(c10::kCUDA, 0);
  // Ten steps on each device. Later steps are not compared: a near-tie between two compactor
  // norms can flip one removed index between devices (seen at step 20 on an H100), after which
  // the runs rightly diverge.
  const WidRun on_cpu =
      run_wid("wid-device-cpu", WidStrategy::kDim, ResidualScore::kReference, 10, false, teacher);
  {
    test::OnDevice on(gpu);
    run_wid("wid-device-gpu", WidStrategy::kDim, ResidualScore::kReference, 10, false, teacher);
  }
  const BertConfig c = load_config_dir(teacher);
  auto masks = [&](const std::string& run) {
    return load_wid_checkpoint(run + "/checkpoints/step-0000010", c).second.to_json();
  };
  EXPECT_EQ(masks(on_cpu.options.train.out_dir), masks(world().dir / "wid-device-gpu"));
  // Training losses agree to 1e-4 on an H100; the step-10 validation loss to 0.2%.
  test::expect_same_losses(on_cpu.options.train.out_dir, world().dir / "wid-device-gpu", 1e-2);
  // The GPU run resumes (masks back on the device) and merges its student.
  test::OnDevice on(gpu);
  const WidRun resumed =
      run_wid("wid-device-gpu", WidStrategy::kDim, ResidualScore::kReference, 0, true, teacher);
  ASSERT_TRUE(resumed.result.train.finished);
  EXPECT_EQ(load_config_dir(resumed.result.student_dir).hidden_size, 16);
}

TEST(Wid, TooFewStepsForTheScheduleIsAnError) {
  WidOptions o;
  o.train = world().options("wid-short");
  o.train.steps = 16;
  o.schedule.w_step = 1;
  o.target.hidden = 16;
  EXPECT_ERROR_CONTAINS(wid_train(o), ("--steps 16 ends before the masks reach the target"),
                        ("step 16"));
}

}  // namespace
}  // namespace slimbert
