// Training behaviour held bit for bit: short fixed-seed runs of every training method (MLM
// pretraining, fine-tuning with and without distillation, WID with its merge, the three DynaBERT
// stages) against the losses and weights they produced when the fixture was recorded. A change
// to the training code that is meant to keep behaviour (a refactor) must leave this test green.
//
// Record anew (only when behaviour is meant to change, and say why in the commit):
//   SLIMBERT_RECORD_GOLDEN=tests/fixtures/training-golden.json
//   build/tests/slimbert_tests --gtest_filter='Golden.*'   (with that variable set)
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mlm_world.h"
#include "slimbert/core/runtime.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/finetune.h"
#include "slimbert/wid/wid.h"
#include "test_util.h"

namespace slimbert {
namespace {

using nlohmann::json;

// FNV-1a over a tensor's bytes: a change in any bit of any weight changes it.
std::string digest(const at::Tensor& t) {
  const at::Tensor c = t.contiguous().cpu();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json weights_digest(const std::string& dir) {
  json out = json::object();
  for (const auto& [name, t] : load_weights(dir)) out[name] = digest(t);
  return out;
}

// Every logged value of a run except those that measure time or name a path.
json logged_values(const std::string& run_dir) {
  json rows = json::array();
  for (const std::string& line : split_lines(read_file(run_dir + "/metrics.jsonl"), true)) {
    if (line.empty()) continue;
    json row = json::parse(line), kept = json::object();
    if (row.value("event", "") == "checkpoint") continue;  // where checkpoints go is not behaviour
    for (auto it = row.begin(); it != row.end(); ++it) {
      const std::string& k = it.key();
      if (k == "elapsed_s" || k == "mfu" || k == "tokens_per_s" || k.rfind("eta", 0) == 0 ||
          k == "note")  // a checkpoint's path, under this run's temporary directory
        continue;
      kept[k] = *it;
    }
    rows.push_back(kept);
  }
  return rows;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// The runs, one thread, AVX2 kernels in libtorch and in OpenBLAS (ctest sets OPENBLAS_CORETYPE,
// which OpenBLAS reads when it loads), so that machines with and without AVX-512 produce the same
// bits. Run by hand: OPENBLAS_CORETYPE=Haswell build/tests/slimbert_tests
// --gtest_filter='Golden.*'.
json record_runs() {
  const test::World& w = test::world();
  json runs;

  PretrainOptions p = w.options("golden-pretrain");
  p.accumulation = 2;
  pretrain(p);
  runs["pretrain"] = {{"metrics", logged_values(p.out_dir)},
                      {"weights", weights_digest(p.out_dir + "/model")}};

  const std::string data = w.dir / "golden-task";
  test::write_word_count_task(data);
  FinetuneOptions f;
  f.model_dir = w.init;
  f.task = "tsv";
  f.data_dir = data;
  f.out_dir = w.dir / "golden-finetune";
  f.epochs = 4;
  f.batch_size = 16;
  f.max_length = 16;
  f.lr = 1e-3;
  f.log_every = 3;
  finetune(f);
  const std::string teacher = f.out_dir + "/best";
  runs["finetune"] = {{"metrics", logged_values(f.out_dir)},
                      {"weights", weights_digest(f.out_dir + "/model")},
                      {"best", weights_digest(teacher)}};

  FinetuneOptions kd = f;
  kd.out_dir = w.dir / "golden-kd";
  kd.epochs = 1;
  kd.distil_from = teacher;
  finetune(kd);
  runs["finetune_kd"] = {{"metrics", logged_values(kd.out_dir)},
                         {"weights", weights_digest(kd.out_dir + "/model")}};

  WidOptions o;
  o.train = w.options("golden-wid");
  o.train.steps = 20;
  o.train.lr = 1e-3;
  o.train.warmup_fraction = 0.1;
  o.train.save_every = 10;
  o.train.eval_every = 10;
  o.train.log_every = 5;
  o.schedule.w_step = 1;
  o.schedule.zero_by = 0.5;
  o.target.hidden = 16;
  o.compactor_lr = 5e-3;
  const WidResult wr = wid_train(o);
  runs["wid"] = {
      {"metrics", logged_values(o.train.out_dir)},
      {"student", weights_digest(wr.student_dir)},
      {"compactor_model", weights_digest(o.train.out_dir + "/checkpoints/step-0000020")}};

  BertForSequenceClassification model = load_classifier(teacher);
  {
    const TaskSpec spec = task_for_model(model->bert->config(), "tsv", data);
    const Tokenizer tokenizer = Tokenizer::from_dir(teacher);
    const EncodedTask enc = encode_task(tokenizer, spec, spec.load("train"), 16, true);
    rewire(model->bert, compute_importance(model, enc, false, 16, 0));
    save_checkpoint(w.dir / "golden-rewired", model->bert->config(), *model, tokenizer);
  }
  runs["rewire"] = {{"weights", weights_digest(w.dir / "golden-rewired")}};
  std::string student = w.dir / "golden-rewired", stage_teacher = teacher;
  for (DynaStage stage : {DynaStage::kWidth, DynaStage::kWidthDepth, DynaStage::kFinetune}) {
    DynaTrainOptions d;
    d.stage = stage;
    d.teacher_dir = stage == DynaStage::kFinetune ? "" : stage_teacher;
    d.train = f;
    d.train.model_dir = student;
    d.train.out_dir = w.dir / ("golden-dyna-" + to_string(stage));
    d.train.epochs = 1;
    d.train.lr = 1e-3;
    d.train.log_every = 2;
    d.train.eval_every = 5;
    d.lambda2 = stage == DynaStage::kWidth ? 0.1 : 1.0;
    dynabert_train(d);
    runs["dynabert_" + to_string(stage)] = {{"metrics", logged_values(d.train.out_dir)},
                                            {"weights", weights_digest(d.train.out_dir + "/model")},
                                            {"best", weights_digest(d.train.out_dir + "/best")}};
    student = stage_teacher = d.train.out_dir + "/best";
  }
  return runs;
}

TEST(Golden, EveryTrainingMethodKeepsItsRecordedLossesAndWeights) {
  // Before the first tensor op: libtorch picks its kernels once per process.
  setenv("ATEN_CPU_CAPABILITY", "avx2", 1);
  configure_runtime(RuntimeConfig{1, false, "cpu"});
  const json runs = record_runs();
  if (const char* path = std::getenv("SLIMBERT_RECORD_GOLDEN")) {
    write_file_atomic(path, json{{"cpu", cpu_model()}, {"runs", runs}}.dump(1) + "\n");
    GTEST_SKIP() << "recorded " << path;
  }
  const json golden = json::parse(read_file(test::fixture("training-golden.json")));
  const json& want = golden.at("runs");
  ASSERT_EQ(want.size(), runs.size());
  for (auto run = want.begin(); run != want.end(); ++run) {
    ASSERT_TRUE(runs.contains(run.key())) << run.key();
    const json& got = runs.at(run.key());
    for (auto part = run->begin(); part != run->end(); ++part) {
      if (part.key() != "metrics") {
        EXPECT_EQ(got.at(part.key()), *part) << run.key() << " " << part.key() << " differ";
        continue;
      }
      ASSERT_EQ(got.at("metrics").size(), part->size()) << run.key() << ": logged rows";
      for (size_t i = 0; i < part->size(); ++i)
        EXPECT_EQ(got.at("metrics")[i], (*part)[i]) << run.key() << ": metrics row " << i;
    }
  }
  if (HasFailure() && golden.at("cpu") != cpu_model())
    std::cerr << "recorded on " << golden.at("cpu") << ", running on " << cpu_model() << "\n";
}

}  // namespace
}  // namespace slimbert
