// slimbert compress at tiny scale, through the CLI: the DynaBERT and WID pipelines end to end,
// their exports loadable and equal to slicing the adaptive model, the report, a run killed with
// SIGKILL and resumed equal to the uninterrupted one, and the checks on resuming.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

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

std::string dyna_args(const std::string& out) {
  const CompressWorld& w = compress_world();
  return "compress --model " + w.teacher + " --task tsv --data " + w.task + " --out " + out +
         " --widths 1,0.5 --depths 1,0.5 --batch-size 16 --max-length 16 --lr 1e-3"
         " --rewire-examples 64 --latency-iters 2 --log-every 100 --threads 1";
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
      " --lr 1e-3 --latency-iters 2 --log-every 100 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* stage : {"[1/6] wid", "[2/6] student", "[3/6] grid", "[6/6] report"})
    EXPECT_NE(r.err.find(stage), std::string::npos) << stage << "\n" << r.err;
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
