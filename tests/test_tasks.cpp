// Task loaders on small hand-written files in every layout, metrics against hand-computed
// values, and fine-tuning end to end on a tiny model.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "slimbert/core/fs.h"
#include "slimbert/data/metrics.h"
#include "slimbert/data/tasks.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/finetune.h"
#include "test_util.h"

namespace slimbert {
namespace fs = std::filesystem;
namespace {

using test::TempDir;

// ---- Metrics ----------------------------------------------------------------------------------

TEST(Metrics, HandComputedValues) {
  const std::vector<int64_t> gold = {1, 1, 1, 0, 0, 0, 1, 0};
  const std::vector<int64_t> pred = {1, 1, 0, 0, 1, 0, 1, 0};
  // tp 3, tn 3, fp 1, fn 1.
  EXPECT_DOUBLE_EQ(accuracy(pred, gold), 6.0 / 8.0);
  EXPECT_DOUBLE_EQ(f1_binary(pred, gold), 6.0 / 8.0);          // 2*3 / (2*3 + 1 + 1)
  EXPECT_DOUBLE_EQ(matthews(pred, gold), (9.0 - 1.0) / 16.0);  // (tp*tn - fp*fn) / sqrt(4*4*4*4)
  EXPECT_DOUBLE_EQ(matthews({1, 1, 1}, {1, 1, 1}), 0.0);       // undefined -> 0, as sklearn
  EXPECT_NEAR(pearson({1, 2, 3, 4}, {2, 4, 6, 8}), 1.0, 1e-12);
  EXPECT_NEAR(pearson({1, 2, 3}, {1, 3, 2}), 0.5, 1e-12);
  // Ties get average ranks: x ranks {1, 2.5, 2.5, 4}, y ranks {1, 2, 3, 4}.
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {10, 20, 30, 40}), 4.5 / std::sqrt(4.5 * 5.0), 1e-12);
  auto m = classification_metrics(pred, gold, "acc_and_f1");
  EXPECT_DOUBLE_EQ(m["main"], 0.75);
  auto r = regression_metrics({1, 2, 3}, {1, 2, 4});
  EXPECT_NEAR(r["mse"], 1.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(r["main"], (r["pearson"] + r["spearman"]) / 2);
  EXPECT_ERROR_CONTAINS(accuracy({1}, {1, 0}), "1 predictions for 2 labels");
}

// ---- GLUE layouts -------------------------------------------------------------------------------

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  write_file_atomic(path, text);
}

TEST(GlueLoaders, EveryLayout) {
  TempDir d;
  const std::string g = d.path();
  write(g + "/CoLA/train.tsv",
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we study "
        "verbs.\n");
  write(g + "/CoLA/test.tsv", "index\tsentence\n0\tBill whistled past the house.\n");
  write(g + "/SST-2/train.tsv",
        "sentence\tlabel\nhide new secretions \t0\nthe greatest musicians \t1\n");
  write(g + "/MRPC/train.tsv",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused his "
        "brother .\tReferring to him .\n");
  write(g + "/STS-B/train.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air "
        "plane is taking off.\t5.000\n");
  write(g + "/QQP/train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow is the "
        "life?\tHow is life?\t1\n");
  write(g + "/QQP/test.tsv", "id\tquestion1\tquestion2\n0\tWhy?\tWhy not?\n");
  const std::string mnli_header =
      "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_"
      "parse\t"
      "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";
  write(g + "/MNLI/train.tsv", mnli_header +
                                   "0\t31193\t31193n\tgovernment\t(\t(\t(\t(\tConceptually "
                                   "cream.\tProduct and geography.\tneutral\tneutral\n");
  write(g + "/MNLI/dev_matched.tsv", mnli_header +
                                         "0\t1\t1e\tfiction\t(\t(\t(\t(\tThe new rights.\tEveryone "
                                         "loves.\tentailment\tentailment\n");
  write(
      g + "/MNLI/dev_mismatched.tsv",
      mnli_header +
          "0\t1\t1c\tletters\t(\t(\t(\t(\tYour gift.\tNot at all.\tcontradiction\tcontradiction\n");
  write(g + "/QNLI/train.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe law came.\tentailment\n");
  write(g + "/RTE/train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tNo weapons.\tWeapons found.\tnot_entailment\n");
  write(g + "/WNLI/train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tI stuck a pin in.\t1\n");

  auto cola = TaskSpec::make("cola", g).load("train");
  ASSERT_EQ(cola.examples.size(), 2u);
  EXPECT_EQ(cola.examples[1].text_a, "The more we study verbs.");
  EXPECT_EQ(cola.examples[1].label, "0");
  EXPECT_FALSE(cola.examples[1].text_b);
  auto cola_test = TaskSpec::make("cola", g).load("test");
  ASSERT_EQ(cola_test.examples.size(), 1u);
  EXPECT_EQ(cola_test.examples[0].text_a, "Bill whistled past the house.");
  EXPECT_EQ(cola_test.examples[0].label, "");

  auto sst = TaskSpec::make("sst2", g).load("train");
  EXPECT_EQ(sst.examples[1].text_a, "the greatest musicians ");
  EXPECT_EQ(sst.examples[1].label, "1");

  auto mrpc = TaskSpec::make("mrpc", g).load("train");
  EXPECT_EQ(mrpc.examples[0].text_a, "Amrozi accused his brother .");
  EXPECT_EQ(*mrpc.examples[0].text_b, "Referring to him .");
  EXPECT_EQ(mrpc.examples[0].label, "1");
  EXPECT_EQ(TaskSpec::make("mrpc", g).main_metric, "acc_and_f1");

  TaskSpec stsb = TaskSpec::make("stsb", g);
  EXPECT_TRUE(stsb.regression);
  EXPECT_EQ(stsb.load("train").examples[0].label, "5.000");
  EXPECT_EQ(*stsb.load("train").examples[0].text_b, "An air plane is taking off.");

  auto qqp_test = TaskSpec::make("qqp", g).load("test");
  EXPECT_EQ(qqp_test.examples[0].text_a, "Why?");
  EXPECT_EQ(*qqp_test.examples[0].text_b, "Why not?");
  EXPECT_EQ(TaskSpec::make("qqp", g).load("train").examples[0].label, "1");

  TaskSpec mnli = TaskSpec::make("mnli", g);
  EXPECT_EQ(mnli.load("train").examples[0].label, "neutral");
  EXPECT_EQ(mnli.load("dev").examples[0].label, "entailment");
  EXPECT_EQ(TaskSpec::make("mnli-mm", g).load("dev").examples[0].label, "contradiction");
  EXPECT_EQ(mnli.label_index(mnli.load("train").examples[0], "x"), 2);

  EXPECT_EQ(TaskSpec::make("qnli", g).load("train").examples[0].label, "entailment");
  EXPECT_EQ(*TaskSpec::make("rte", g).load("train").examples[0].text_b, "Weapons found.");
  EXPECT_EQ(TaskSpec::make("wnli", g).load("train").examples[0].label, "1");
  // A task directory itself works as well as the GLUE root.
  EXPECT_EQ(TaskSpec::make("rte", g + "/RTE").load("train").examples.size(), 1u);
  EXPECT_EQ(TaskSpec::make("rte", g).display_name(), "rte");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("squad", g), "unknown task format 'squad'");
}

TEST(GenericLoaders, TsvCsvJsonl) {
  TempDir d;
  write(d / "tsv/train.tsv", "sentence1\tsentence2\tlabel\na\tb\tyes\nc\td\tno\n");
  TaskSpec tsv = TaskSpec::make("tsv", d / "tsv");
  EXPECT_EQ(tsv.labels, (std::vector<std::string>{"no", "yes"}));
  EXPECT_EQ(*tsv.load("train").examples[0].text_b, "b");

  write(d / "csv/train.csv", "text,label\n\"Hello, \"\"world\"\"\",pos\nplain,neg\n");
  TaskSpec csv = TaskSpec::make("csv", d / "csv");
  EXPECT_EQ(csv.load("train").examples[0].text_a, "Hello, \"world\"");
  EXPECT_EQ(csv.labels.size(), 2u);
  EXPECT_ERROR_CONTAINS(split_csv_line("\"open", "f.csv:3"), "f.csv:3", "unterminated");

  write(d / "jsonl/train.jsonl",
        "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"text_pair\": \"c\", \"label\": "
        "2}\n");
  TaskSpec jsonl = TaskSpec::make("jsonl", d / "jsonl");
  EXPECT_EQ(jsonl.labels, (std::vector<std::string>{"2", "x"}));
  EXPECT_EQ(*jsonl.load("train").examples[1].text_b, "c");

  // Many distinct numeric labels: regression.
  std::string reg = "sentence\tlabel\n";
  for (int i = 0; i < 30; ++i)
    reg += "s" + std::to_string(i) + "\t" + std::to_string(i * 0.1) + "\n";
  write(d / "reg/train.tsv", reg);
  EXPECT_TRUE(TaskSpec::make("tsv", d / "reg").regression);
  EXPECT_EQ(TaskSpec::make("tsv", d / "reg/").display_name(),
            "reg");  // generic tasks: the directory
}

TEST(LoaderErrors, MalformedRowsUnknownLabelsAndSingleClass) {
  TempDir d;
  write(d / "t/train.tsv", "sentence\tlabel\ngood\tpos\nbad row without label\nfine\tneg\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "t"), "train.tsv:3", "expected 2 columns, got 1",
                        "--skip-bad-rows");
  TaskSpec skip = TaskSpec::make("tsv", d / "t", /*skip_bad_rows=*/true);
  TaskData data = skip.load("train");
  EXPECT_EQ(data.examples.size(), 2u);
  EXPECT_EQ(data.skipped_rows, 1);

  write(d / "t/dev.tsv", "sentence\tlabel\nx\tneutral\n");
  TaskData dev = skip.load("dev");
  EXPECT_ERROR_CONTAINS(skip.label_index(dev.examples[0], dev.source), "dev.tsv:2",
                        "label 'neutral'", "{neg, pos}");
  write(d / "one/train.tsv", "sentence\tlabel\na\tpos\nb\tpos\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "one"), "only one label");
  write(d / "nohdr/train.tsv", "foo\tbar\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "nohdr"), "header needs a text column");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "missing"), "missing: task directory not found");
  write(d / "notrain/dev.tsv", "sentence\tlabel\na\tpos\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "notrain"), "train.tsv", "not found");
}

// ---- Fine-tuning
// ----------------------------------------------------------------------------------

// A tiny pretrained checkpoint at d/pre and a separable task at d/task: does the text hold
// w0..w9 ("low") or only w20..w39 ("high")? With `scramble`, the training labels are random
// (dev and test stay true).
void write_separable_task(const TempDir& d, const std::string& task_dir, bool scramble = false) {
  if (!fs::exists(d / "pre")) {
    std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < 40; ++i) tokens.push_back("w" + std::to_string(i));
    Tokenizer tokenizer(Vocab::from_tokens(tokens), TokenizerOptions{});
    const BertConfig c = test::tiny_config(static_cast<int64_t>(tokens.size()), 32);
    BertForMaskedLM mlm(c);
    init_weights(*mlm, c, 1);
    save_checkpoint(d / "pre", c, *mlm, tokenizer);
  }
  for (const std::string split : {"train", "dev", "test"}) {
    std::string text = "sentence\tlabel\n";
    const int n = split == "train" ? 256 : 64;
    for (int i = 0; i < n; ++i) {
      const bool low = (i * 7 + (split == "dev")) % 2 == 0;
      std::string s;
      for (int k = 0; k < 5; ++k)
        s += "w" + std::to_string((low ? 0 : 20) + (i * 3 + k * 5) % (low ? 10 : 20)) + " ";
      // A label uncorrelated with the text (the class alternates with period 4, the text
      // with period 2).
      const bool label_low = scramble && split == "train" ? (i / 2) % 2 == 0 : low;
      text += s + "\t" + (label_low ? "low" : "high") + "\n";
    }
    write(d / (task_dir + "/" + split + ".tsv"), text);
  }
}

FinetuneOptions separable_options(const TempDir& d, const std::string& task_dir,
                                  const std::string& out) {
  FinetuneOptions o;
  o.model_dir = d / "pre";
  o.task = "tsv";
  o.data_dir = d / task_dir;
  o.out_dir = d / out;
  o.epochs = 3;
  o.batch_size = 16;
  o.max_length = 16;
  o.lr = 2e-3;
  o.log_every = 10;
  return o;
}

TEST(Finetune, TinyModelLearnsASeparableTaskAndReportsDevAndTest) {
  TempDir d;
  write_separable_task(d, "task");
  FinetuneResult r = finetune(separable_options(d, "task", "out"));
  EXPECT_TRUE(r.finished);
  EXPECT_GT(r.best_dev.metrics.at("accuracy"), 0.9);
  auto report = nlohmann::json::parse(read_file(d / "out/eval.json"));
  EXPECT_GT(report["test"]["accuracy"].get<double>(), 0.9);
  EXPECT_EQ(report["dev"]["examples"], 64);
  EXPECT_DOUBLE_EQ(report["training"]["lr"].get<double>(), 2e-3);
  BertConfig saved = load_config_dir(d / "out/best");
  EXPECT_EQ(saved.label_name(0), "high");
  EXPECT_EQ(saved.label_name(1), "low");
  EXPECT_EQ(saved.problem_type, "single_label_classification");
}

// ---- Task-specific distillation -------------------------------------------------------------

TEST(Distillation, LossIsTheTemperatureScaledCrossEntropyOfTheTeachersDistribution) {
  at::manual_seed(3);
  const at::Tensor s = at::randn({5, 4}, at::kDouble), t = at::randn({5, 4}, at::kDouble) * 3;
  for (double T : {1.0, 2.5}) {
    double expected = 0;
    for (int64_t i = 0; i < 5; ++i) {
      double zs = 0, zt = 0;
      for (int64_t j = 0; j < 4; ++j) {
        zs += std::exp(s[i][j].item<double>() / T);
        zt += std::exp(t[i][j].item<double>() / T);
      }
      for (int64_t j = 0; j < 4; ++j)
        expected -=
            std::exp(t[i][j].item<double>() / T) / zt * (s[i][j].item<double>() / T - std::log(zs));
    }
    expected *= T * T / 5;
    EXPECT_NEAR(distillation_loss(s, t, T, false).item<double>(), expected, 1e-12) << "T " << T;
    // Minimal where the student equals the teacher: zero gradient there.
    const at::Tensor x = t.clone().requires_grad_(true);
    distillation_loss(x, t, T, false).backward();
    EXPECT_LT(x.grad().abs().max().item<double>(), 1e-12);
  }
  EXPECT_NEAR(distillation_loss(s.select(1, 0), t.select(1, 0), 2.0, true).item<double>(),
              (s.select(1, 0) - t.select(1, 0)).pow(2).mean().item<double>(), 1e-12);
}

TEST(Distillation, TeacherLogitsFollowTheStudentsLabelOrder) {
  TempDir d;
  write_separable_task(d, "task");
  FinetuneOptions o = separable_options(d, "task", "teacher");
  o.epochs = 1;
  finetune(o);
  const TaskSpec spec = TaskSpec::make("tsv", d / "task");
  const TaskData train = spec.load("train");
  const at::Tensor logits = teacher_logits(d / "teacher/best", spec, train, 16);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{256, 2}));
  // The same, one row at a time.
  BertForSequenceClassification teacher = load_classifier(d / "teacher/best");
  const Tokenizer tokenizer = Tokenizer::from_dir(d / "teacher/best");
  const EncodedTask enc = encode_task(tokenizer, spec, train, 16, true);
  teacher->eval();
  at::NoGradGuard no_grad;
  for (size_t i : {size_t{0}, size_t{77}, size_t{255}}) {
    const at::Tensor one = teacher->forward(batch_of(enc.inputs, {i}, 0, 1, tokenizer.pad_id()));
    EXPECT_TRUE(at::allclose(logits[static_cast<int64_t>(i)], one[0], 1e-5, 1e-6)) << "row " << i;
  }
  // A copy of the teacher with its label order reversed predicts the same columns.
  BertConfig flipped_config = teacher->bert->config();
  flipped_config.id2label = {{0, "low"}, {1, "high"}};
  teacher->classifier->weight.set_data(teacher->classifier->weight.flip(0).contiguous());
  teacher->classifier->bias.set_data(teacher->classifier->bias.flip(0).contiguous());
  save_checkpoint(d / "flipped", flipped_config, *teacher, tokenizer);
  EXPECT_TRUE(at::allclose(teacher_logits(d / "flipped", spec, train, 16), logits, 1e-5, 1e-6));
  // A teacher of another label set is refused.
  write(d / "three/train.tsv", "sentence\tlabel\nw1\ta\nw2\tb\nw3\tc\n");
  EXPECT_ERROR_CONTAINS(teacher_logits(d / "teacher/best", TaskSpec::make("tsv", d / "three"),
                                       TaskSpec::make("tsv", d / "three").load("train"), 16),
                        "teacher/best", "2 labels", "{a, b, c}");
}

TEST(Distillation, StudentLearnsFromTheTeacherWhatTheLabelsDoNotSay) {
  TempDir d;
  write_separable_task(d, "task");
  write_separable_task(d, "scrambled", /*scramble=*/true);
  finetune(separable_options(d, "task", "teacher"));
  // The training labels of "scrambled" say nothing about the text: alone they teach nothing,
  // through the teacher's predictions the student learns the task.
  FinetuneOptions plain = separable_options(d, "scrambled", "plain");
  const FinetuneResult without = finetune(plain);
  FinetuneOptions kd = separable_options(d, "scrambled", "kd");
  kd.distil_from = d / "teacher/best";
  kd.kd_weight = 1.0;
  kd.kd_temperature = 2.0;
  const FinetuneResult with = finetune(kd);
  EXPECT_LT(without.best_dev.metrics.at("accuracy"), 0.75);
  EXPECT_GT(with.best_dev.metrics.at("accuracy"), 0.9);
  const auto report = nlohmann::json::parse(read_file(d / "kd/eval.json"));
  EXPECT_EQ(report["training"]["distil_from"], d / "teacher/best");
  EXPECT_GT(report["test"]["accuracy"].get<double>(), 0.9);
  // Weight 0: the distillation term is computed and logged but the run is plain fine-tuning.
  FinetuneOptions zero = separable_options(d, "scrambled", "zero");
  zero.distil_from = d / "teacher/best";
  zero.kd_weight = 0.0;
  finetune(zero);
  test::expect_same_losses(d / "plain", d / "zero", 1e-6);
  EXPECT_GT(test::logged_losses(d / "zero").at(10).at("loss_kd"), 0.0);
  zero.kd_weight = 1.5;
  zero.out_dir = d / "bad";
  EXPECT_ERROR_CONTAINS(finetune(zero), "--kd-weight must be in [0, 1]");
}

}  // namespace
}  // namespace slimbert
