// slimbert compress at tiny scale, through the CLI: the DynaBERT and WID pipelines end to end,
// their exports loadable and equal to slicing the adaptive model, the report, a run killed with
// SIGKILL and resumed equal to the uninterrupted one, and the checks on resuming.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "mlm_world.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/train/finetune.h"
#include "test_util.h"

namespace slimbert {
namespace {

namespace fs = std::filesystem;

// A teacher fine-tuned on the word-count task from the world's tiny MLM.
struct CompressWorld {
  test::TempDir dir;
  std::string task, teacher;
  CompressWorld() {
    task = dir / "task";
    test::write_word_count_task(task);
    teacher = test::finetune_word_count_teacher(test::world().init, task, dir / "teacher");
  }
};

const CompressWorld& compress_world() {
  static CompressWorld w;
  return w;
}

std::string dyna_args(const std::string& out, int log_every = 100) {
  const CompressWorld& w = compress_world();
  return "compress --model " + w.teacher + " --task tsv --data " + w.task + " --out " + out +
         " --widths 1,0.5 --depths 1,0.5 --batch-size 16 --max-length 16 --lr 1e-3"
         " --rewire-examples 64 --latency-iters 2 --threads 1 --log-every " +
         std::to_string(log_every);
}

nlohmann::json ledger(const std::string& out) {
  return nlohmann::json::parse(read_file(out + "/compress.json"));
}

double dev_score(const std::string& args) {
  const test::CliResult r =
      test::run_cli("eval " + args + " --task tsv --data " + compress_world().task +
                    " --max-length 16 --json --threads 1");
  EXPECT_EQ(r.code, 0) << r.err;
  return nlohmann::json::parse(r.out).at("dev").at("main").get<double>();
}

TEST(Compress, DynaBertPipelineRunsEndToEndAndItsExportsEqualTheSlices) {
  const std::string out = compress_world().dir / "dyna";
  const test::CliResult r = test::run_cli(dyna_args(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("compressed: " + out + "/exports/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("slimbert serve " + out + "/model"), std::string::npos) << r.out;
  for (const char* stage :
       {"[1/8] rewire", "[2/8] stage1-width", "[3/8] stage2-width-depth", "[4/8] stage3-labels",
        "[5/8] grid", "[6/8] profile", "[7/8] export", "[8/8] report"})
    EXPECT_NE(r.err.find(stage), std::string::npos) << stage << "\n" << r.err;
  // The stages' own progress lines say where the job is.
  EXPECT_NE(r.err.find("compress [3/8] dynabert train done in"), std::string::npos) << r.err;
  // What a user looks at stays; optimizer state of finished stages goes.
  EXPECT_TRUE(fs::exists(out + "/model/profile.json"));
  EXPECT_FALSE(fs::exists(out + "/stage1/checkpoints"));
  EXPECT_FALSE(fs::exists(out + "/stage2/model"));
  EXPECT_FALSE(fs::exists(out + "/stage3/best/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/stage3/metrics.jsonl"));
  const std::string html = read_file(out + "/report.html");
  size_t svgs = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1))
    ++svgs;
  EXPECT_EQ(svgs, 3u);
  EXPECT_NE(html.find("teacher "), std::string::npos);

  // Every export is a plain checkpoint with the score of its slice of the adaptive model.
  const nlohmann::json models = ledger(out)["stages"]["export"]["models"];
  ASSERT_GE(models.size(), 1u);
  int chosen = 0;
  for (const auto& m : models) {
    chosen += m["chosen"].get<bool>();
    const std::string dir = m["dir"];
    std::ostringstream slice;
    slice << out << "/model --width " << m["width"].get<double>() << " --depth "
          << m["depth"].get<double>();
    EXPECT_NEAR(dev_score(dir), dev_score(slice.str()), 1e-9) << dir;
    EXPECT_NEAR(dev_score(dir), m["dev"].get<double>(), 1e-9) << dir;
    const test::CliResult p = test::run_cli("predict " + dir + " --threads 1", "w1 w2 w3\n");
    EXPECT_EQ(p.code, 0) << p.err;
  }
  EXPECT_EQ(chosen, 1);

  // A second run into the same directory must say --resume; a resumed finished run skips all;
  // a resume with other options names the one that differs.
  const test::CliResult again = test::run_cli(dyna_args(out));
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.err.find("--resume continues it"), std::string::npos) << again.err;
  const test::CliResult resumed = test::run_cli(dyna_args(out) + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("[8/8] report: done before, skipped"), std::string::npos)
      << resumed.err;
  const test::CliResult other = test::run_cli(dyna_args(out) + " --resume --epochs 2");
  EXPECT_NE(other.code, 0);
  EXPECT_NE(other.err.find("--resume: epochs is 2 but"), std::string::npos) << other.err;
}

// Each logged training line of a stage's metrics.jsonl.
std::vector<nlohmann::json> step_lines(const std::string& metrics) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_file(metrics));
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) lines.push_back(std::move(j));
  }
  return lines;
}

TEST(Compress, HyperParameterOverridesReachTheirStagesAndBindTheResume) {
  const std::string out = compress_world().dir / "overrides";
  // No logit and no hidden-state loss in stage 1 (its loss is exactly 0), stage 2's own lambda2;
  // a warm-up in every stage (the first step runs below the peak rate).
  const std::string args = dyna_args(out, 1) + " --no-stage3 --warmup 0.5 --lambda1 0";
  const test::CliResult r = test::run_cli(args + " --stage1-lambda2 0");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto stage1 = step_lines(out + "/stage1/metrics.jsonl");
  const auto stage2 = step_lines(out + "/stage2/metrics.jsonl");
  ASSERT_GE(stage1.size(), 2u);
  ASSERT_GE(stage2.size(), 2u);
  for (const auto& line : stage1) EXPECT_EQ(line.at("loss").get<double>(), 0.0) << line;
  for (const auto& line : stage2) EXPECT_GT(line.at("loss").get<double>(), 0.0) << line;
  for (const auto* lines : {&stage1, &stage2}) {
    EXPECT_LT(lines->front().at("lr").get<double>(), 0.99e-3) << lines->front();
    EXPECT_GT(lines->at(1).at("lr").get<double>(), lines->front().at("lr").get<double>());
  }
  const test::CliResult other = test::run_cli(args + " --stage1-lambda2 0.5 --resume");
  EXPECT_NE(other.code, 0);
  EXPECT_NE(other.err.find("--resume: stage1_lambda2 is 0.5 but"), std::string::npos) << other.err;
  const test::CliResult unset = test::run_cli(dyna_args(out, 1) + " --resume --no-stage3");
  EXPECT_NE(unset.code, 0);
  EXPECT_NE(unset.err.find("--resume: lambda1 is not set but"), std::string::npos) << unset.err;
  // An override of a stage the method does not run is a usage error, before any work.
  const CompressWorld& w = compress_world();
  const test::CliResult wrong =
      test::run_cli("compress --method dynabert --model " + w.teacher + " --task tsv --data " +
                    w.task + " --out " + (w.dir / "wrong-method") + " --wid-lambda 5");
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(wrong.err.find("--method dynabert does not run"), std::string::npos) << wrong.err;
  EXPECT_FALSE(fs::exists(w.dir / "wrong-method"));
}

TEST(Compress, AKilledRunResumesToTheUninterruptedOne) {
  const std::string straight = compress_world().dir / "straight",
                    killed = compress_world().dir / "killed";
  const test::CliResult a = test::run_cli(dyna_args(straight));
  ASSERT_EQ(a.code, 0) << a.err;
  // Killed once the distillation is under way (its first checkpoint written or the stage done).
  const std::string pid_file = killed + ".pid";
  const std::string script = "(exec " + std::string(SLIMBERT_CLI) + " " + dyna_args(killed) +
                             " >/dev/null 2>" + killed + ".err) </dev/null & echo $! >" + pid_file;
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()), 0);
  const auto started = std::chrono::steady_clock::now();
  while (!fs::exists(killed + "/stage1/checkpoints") && !fs::exists(killed + "/stage2")) {
    ASSERT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(120))
        << read_file(killed + ".err");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(std::stoi(read_file(pid_file)), SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(ledger(killed)["stages"].contains("stage2-width-depth")) << "killed too late";
  const test::CliResult b = test::run_cli(dyna_args(killed) + " --resume");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("rewire: done before, skipped"), std::string::npos) << b.err;
  test::expect_same_weights(load_weights(straight + "/model"), load_weights(killed + "/model"));
}

TEST(Compress, WidPipelineMergesAndFinetunesTheStudent) {
  const CompressWorld& w = compress_world();
  const std::string out = w.dir / "wid";
  const test::CliResult r = test::run_cli(
      "compress --method wid --model " + w.teacher + " --task tsv --data " + w.task + " --out " +
      out + " --corpus " + test::world().shards + " --mlm-teacher " + test::world().init +
      " --wid-steps 40 --target-hidden 16 --student-epochs 1 --batch-size 16 --max-length 16"
      " --lr 1e-3 --latency-iters 2 --log-every 100 --threads 1 --zero-by 0.5 --kd-weight 0.7");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* stage : {"[1/6] wid", "[2/6] student", "[3/6] grid", "[6/6] report"})
    EXPECT_NE(r.err.find(stage), std::string::npos) << stage << "\n" << r.err;
  // --zero-by reached WID: removed entries end at exactly zero, so the merge changes nothing.
  const std::string said = "merged student validation loss ";
  const size_t at = r.err.find(said);
  ASSERT_NE(at, std::string::npos) << r.err;
  const double merged = std::stod(r.err.substr(at + said.size()));
  const size_t before = r.err.find("(compactor model ", at);
  ASSERT_NE(before, std::string::npos) << r.err;
  EXPECT_NEAR(merged, std::stod(r.err.substr(before + 17)), 1e-4) << r.err.substr(at, 120);
  EXPECT_EQ(ledger(out)["options"]["kd_weight"], 0.7);
  const std::string dir = out + "/exports/w1_d1";
  EXPECT_EQ(load_config_dir(dir).hidden_size, 16);
  EXPECT_EQ(load_config_dir(dir).num_labels(), 2);
  EXPECT_NEAR(dev_score(dir), ledger(out)["stages"]["student"]["dev"].get<double>(), 1e-9);
  EXPECT_TRUE(fs::exists(out + "/report.html"));
}

// WID's student made width x depth adaptive: the ten stages, and a history that says so.
TEST(Compress, WidThenDynaBertMakesTheStudentAdaptive) {
  const CompressWorld& w = compress_world();
  const std::string out = w.dir / "wid-dyna";
  const test::CliResult r = test::run_cli(
      "compress --method wid+dynabert --model " + w.teacher + " --task tsv --data " + w.task +
      " --out " + out + " --corpus " + test::world().shards + " --mlm-teacher " +
      test::world().init +
      " --wid-steps 40 --target-hidden 16 --student-epochs 1 --widths 1,0.5 --depths 1,0.5"
      " --batch-size 16 --max-length 16 --lr 1e-3 --rewire-examples 64 --latency-iters 2"
      " --log-every 100 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("[3/10] rewire"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[10/10] report"), std::string::npos) << r.err;
  const nlohmann::json history =
      nlohmann::json::parse(read_file(out + "/model/config.json")).at("slimbert_history");
  EXPECT_EQ(history.front(), "wid student");
  EXPECT_NE(std::find(history.begin(), history.end(), "rewired"), history.end()) << history;
  EXPECT_EQ(history.back(), "dynabert finetune") << history;
  EXPECT_EQ(load_config_dir(out + "/model").hidden_size, 16);
}

TEST(Compress, WidWithoutCorpusIsAClearError) {
  const CompressWorld& w = compress_world();
  const test::CliResult r =
      test::run_cli("compress --method wid --model " + w.teacher + " --task tsv --data " + w.task +
                    " --out " + (w.dir / "no-corpus"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("needs --corpus"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(w.dir / "no-corpus"));
}

}  // namespace
}  // namespace slimbert
