// Data-parallel training on c10d's Gloo: 2 ranks x half the batch equal 1 rank x the whole batch
// for pretraining, fine-tuning, WID across mask updates and DynaBERT stage 2; an interrupted and
// resumed 2-rank run equals the uninterrupted one; a rank killed with SIGKILL makes the other
// exit non-zero naming it. Ranks are real processes on loopback (`slimbert launch`, or started
// by hand with torchrun's variables).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "mlm_world.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/safetensors.h"
#include "slimbert/train/finetune.h"
#include "test_util.h"

namespace slimbert {
namespace {

// A port nobody listens on now (the kernel's choice for a bound-then-closed socket).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

test::CliResult launch2(const std::string& command) {
  return test::run_cli("launch --nproc 2 --master-port " + std::to_string(free_port()) + " -- " +
                       command + " --threads 1");
}

// Every weight within `tol`, except the attention key biases: they shift all of a query's scores
// by the same amount, which softmax ignores, so their gradient is zero but for rounding, and
// Adam turns rounding noise into steps of about lr either way. They are compared through the
// function instead (the other weights, and the model's outputs where a test checks them).
void expect_close_weights(const std::string& a_dir, const std::string& b_dir, double tol) {
  // Read as float64: float32 files widen exactly, float64 checkpoints keep their last bits.
  const TensorMap a = load_weights(a_dir, at::kDouble), b = load_weights(b_dir, at::kDouble);
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  std::string where;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    if (name.find(".attention.self.key.bias") != std::string::npos) continue;
    const double d = test::max_diff(t, b.at(name));
    if (d > worst) worst = d, where = name;
  }
  EXPECT_LE(worst, tol) << "largest difference in " << where;
  std::cerr << a_dir << " vs " << b_dir << ": max |diff| " << worst << " (" << where << ")\n";
}

// The synthetic world with every dropout off: ranks draw their own dropout masks, so runs on
// different numbers of ranks are compared without any.
struct DistWorld {
  test::TempDir dir;
  std::string init, task, teacher;
  DistWorld() {
    const test::World& w = test::world();
    init = test::without_dropout(w.init, dir / "init");
    task = dir / "task";
    test::write_word_count_task(task);
    teacher = test::finetune_word_count_teacher(init, task, dir / "teacher");
  }
};

const DistWorld& dist_world() {
  static DistWorld w;
  return w;
}

std::string pretrain_args(const std::string& init, const std::string& out) {
  return "pretrain --init " + init + " --shards " + test::world().shards + " --out " + out +
         " --steps 6 --batch-size 8 --accumulation 2 --lr 3e-3 --warmup 0.25 --log-every 2"
         " --eval-every 3 --eval-batches 2 --save-every 3";
}

TEST(Dist, PretrainingOnTwoRanksEqualsOneRank) {
  const DistWorld& w = dist_world();
  const std::string one = w.dir / "pt-1", two = w.dir / "pt-2";
  const test::CliResult a = test::run_cli(pretrain_args(w.init, one) + " --threads 1");
  ASSERT_EQ(a.code, 0) << a.err;
  const test::CliResult b = launch2(pretrain_args(w.init, two));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("rank 0 exit 0, rank 1 exit 0"), std::string::npos) << b.err;
  expect_close_weights(one + "/model", two + "/model", 1e-5);
  test::expect_same_losses(one, two, 1e-5);  // rank 0 logs the global batch's loss
}

// The share of the gradients reduced while backward ran, as rank 0 logged it.
std::vector<double> logged_overlap(const std::string& run_dir) {
  std::vector<double> out;
  for (const std::string& line : split_lines(read_file(run_dir + "/metrics.jsonl"), true)) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line);
    if (row.contains("allreduce_overlap")) out.push_back(row.at("allreduce_overlap"));
  }
  return out;
}

// In buckets of 4 KB, the gradients' all-reduce runs in many pieces, most started while backward
// still computes the earlier layers' gradients, in the same order on both ranks; the result is
// one rank's. (The tiny model fits in one default bucket: nothing to overlap.)
TEST(Dist, GradientAllReduceInSmallBucketsOverlapsBackwardAndEqualsOneRank) {
  const DistWorld& w = dist_world();
  const std::string one = w.dir / "pt-1-small-buckets", two = w.dir / "pt-2-small-buckets",
                    whole = w.dir / "pt-2-one-bucket";
  ASSERT_EQ(test::run_cli(pretrain_args(w.init, one) + " --threads 1").code, 0);
  setenv("SLIMBERT_DIST_BUCKET_KB", "4", 1);
  const test::CliResult b = launch2(pretrain_args(w.init, two));
  unsetenv("SLIMBERT_DIST_BUCKET_KB");
  ASSERT_EQ(b.code, 0) << b.err;
  expect_close_weights(one + "/model", two + "/model", 1e-5);
  test::expect_same_losses(one, two, 1e-5);
  const std::vector<double> overlap = logged_overlap(two);
  ASSERT_EQ(overlap.size(), 3u);  // steps 2, 4 and 6
  for (double o : overlap) EXPECT_GT(o, 0.5);
  ASSERT_EQ(launch2(pretrain_args(w.init, whole)).code, 0);
  for (double o : logged_overlap(whole)) EXPECT_EQ(o, 0.0);
  EXPECT_TRUE(logged_overlap(one).empty());  // one process reduces nothing
}

// A checkpoint saved by one rank resumes on two: the same data order and global batch.
TEST(Dist, OneRankCheckpointResumesOnTwoRanks) {
  const DistWorld& w = dist_world();
  const std::string one = w.dir / "pt-1-straight", grown = w.dir / "pt-1-then-2";
  const test::CliResult straight = test::run_cli(pretrain_args(w.init, one) + " --threads 1");
  ASSERT_EQ(straight.code, 0) << straight.err;
  const test::CliResult first =
      test::run_cli(pretrain_args(w.init, grown) + " --threads 1 --stop-after 3");
  ASSERT_EQ(first.code, 0) << first.err;
  const test::CliResult second = launch2(pretrain_args(w.init, grown) + " --resume");
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("saved by fewer ranks"), std::string::npos) << second.err;
  expect_close_weights(one + "/model", grown + "/model", 1e-5);
}

TEST(Dist, FinetuningOnTwoRanksEqualsOneRankWithUnevenHalves) {
  const DistWorld& w = dist_world();
  // 15 examples a batch: 7 on rank 0, 8 on rank 1; 160 examples leave a last batch of 10.
  const std::string args = "finetune --model " + w.init + " --task tsv --data " + w.task +
                           " --epochs 1 --batch-size 15 --max-length 16 --lr 1e-3 --log-every 3";
  const std::string one = w.dir / "ft-1", two = w.dir / "ft-2";
  ASSERT_EQ(test::run_cli(args + " --out " + one + " --threads 1").code, 0);
  const test::CliResult b = launch2(args + " --out " + two);
  ASSERT_EQ(b.code, 0) << b.err;
  expect_close_weights(one + "/model", two + "/model", 1e-5);
  test::expect_same_losses(one, two, 1e-5);
  // Rank 0 alone scored dev and wrote best/ and eval.json.
  EXPECT_TRUE(std::filesystem::exists(two + "/eval.json"));
}

// In float64. WID's gradient surgery amplifies float32 rounding ~10^4-fold: an entry removed
// while within ~1e-5 of zero gets its gradient replaced by its value and (lambda - 1) times it
// added to Adam's first moment; with Adam's second moment still ~0, the step is about
// lr (0.1 + 1.9) p / eps, here 10^4 p. In float32 the 2-rank and 1-rank runs (their gradients
// summed in another order) agree to 1e-7 after the first update and part to 2e-5 one step later
// (an entry of 7.3e-6 that differs by 4e-9 becomes -0.05 in both), 4e-4 at the end. In float64
// the same runs agree to 1e-12 at every step: the distributed algorithm is the single-process
// one, held here to the 1e-5 of the other methods.
TEST(Dist, WidOnTwoRanksEqualsOneRankAcrossMaskUpdates) {
  const DistWorld& w = dist_world();
  // Masks change at every step until the target (step 16).
  const std::string args = "wid --teacher " + w.init + " --corpus " + test::world().shards +
                           " --target-hidden 16 --w-step 1 --steps 17 --batch-size 8"
                           " --log-every 1 --lr 1e-3 --compactor-lr 5e-3 --warmup 0.1"
                           " --eval-every 0 --save-every 9 --dtype float64";
  const std::string one = w.dir / "wid-1", two = w.dir / "wid-2", split = w.dir / "wid-1-split";
  const test::CliResult a = test::run_cli(args + " --out " + one + " --threads 1");
  ASSERT_EQ(a.code, 0) << a.err;
  const test::CliResult b = launch2(args + " --out " + two);
  ASSERT_EQ(b.code, 0) << b.err;
  // Rank 0 alone describes the run.
  EXPECT_EQ(occurrences(b.err, "wid: teacher"), 1) << b.err;
  // The masks come from the reduced gradients on every rank: the same kept sizes at every step
  // and the same removed dims at the end; the loss of every step within 1e-5.
  test::expect_same_losses(one, two, 1e-5);
  const auto sizes = [](const std::string& dir) {
    std::vector<std::string> out;
    for (const std::string& line : split_lines(read_file(dir + "/metrics.jsonl"), true))
      if (line.find("\"hidden\"") != std::string::npos) {
        const nlohmann::json row = nlohmann::json::parse(line);
        out.push_back(row.at("hidden").dump() + row.at("attn").dump() + row.at("ffn").dump());
      }
    return out;
  };
  EXPECT_EQ(sizes(one), sizes(two));
  const std::string last = "/checkpoints/step-0000017";
  const auto masks = [&](const std::string& dir) {
    return nlohmann::json::parse(read_file(dir + last + "/trainer_state/state.json"))["wid"];
  };
  EXPECT_EQ(masks(one), masks(two));
  EXPECT_EQ(read_file(one + "/student/config.json"), read_file(two + "/student/config.json"));
  expect_close_weights(one + "/student", two + "/student", 1e-5);
  expect_close_weights(one + last, two + last, 1e-5);
  // Checkpoints keep float64 (the student is stored as float32): a resumed run is the same bits.
  EXPECT_EQ(load_weights(one + last, at::kDouble).begin()->second.scalar_type(), at::kDouble);
  EXPECT_EQ(SafetensorsFile::open(one + "/student/model.safetensors")->tensors().at(0).dtype,
            DType::F32);
  ASSERT_EQ(test::run_cli(args + " --out " + split + " --threads 1 --stop-after 9").code, 0);
  const test::CliResult resumed = test::run_cli(args + " --out " + split + " --threads 1 --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  test::expect_same_weights(load_weights(one + last, at::kDouble),
                            load_weights(split + last, at::kDouble));
  test::expect_same_weights(load_weights(one + "/student"), load_weights(split + "/student"));
}

TEST(Dist, DynaBertStageTwoOnTwoRanksEqualsOneRank) {
  const DistWorld& w = dist_world();
  const std::string args = "dynabert train --model " + w.teacher + " --teacher " + w.teacher +
                           " --task tsv --data " + w.task +
                           " --epochs 1 --batch-size 15 --max-length 16 --lr 1e-3 --log-every 4";
  const std::string one = w.dir / "dyna-1", two = w.dir / "dyna-2";
  ASSERT_EQ(test::run_cli(args + " --out " + one + " --threads 1").code, 0);
  const test::CliResult b = launch2(args + " --out " + two);
  ASSERT_EQ(b.code, 0) << b.err;
  expect_close_weights(one + "/model", two + "/model", 1e-5);
}

TEST(Dist, InterruptedTwoRankRunResumesToTheUninterruptedOne) {
  // With dropout: each rank's generator is saved in the checkpoint and restored on resume.
  const test::World& w = test::world();
  const std::string straight = test::world().dir / "dist-straight",
                    split = test::world().dir / "dist-split";
  ASSERT_EQ(launch2(pretrain_args(w.init, straight)).code, 0);
  const test::CliResult first = launch2(pretrain_args(w.init, split) + " --stop-after 3");
  ASSERT_EQ(first.code, 0) << first.err;
  const test::CliResult second = launch2(pretrain_args(w.init, split) + " --resume");
  ASSERT_EQ(second.code, 0) << second.err;
  test::expect_same_weights(load_weights(straight + "/model"), load_weights(split + "/model"));
}

// Starts a 2-rank pretraining by hand (torchrun's variables, `env` added), sends rank 1 `signal`
// once training runs, and expects rank 0 to exit non-zero naming rank 1 within `limit`.
void expect_rank_zero_names_rank_one(const std::string& name, int signal, const std::string& env,
                                     std::chrono::seconds limit) {
  const test::World& w = test::world();
  const std::string out = test::world().dir / name;
  const std::string vars =
      env + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) + " WORLD_SIZE=2 ";
  const std::string cmd = std::string(SLIMBERT_CLI) + " pretrain --init " + w.init + " --shards " +
                          w.shards + " --out " + out +
                          " --steps 100000 --batch-size 8 --log-every 1 --eval-every 0"
                          " --save-every 0 --threads 1";
  const std::string r0 = out + "-r0", r1 = out + "-r1";
  // Rank 1's pid is the program's (exec); rank 0's exit code is written when it exits.
  const std::string script = "(" + vars + "RANK=0 LOCAL_RANK=0 " + cmd + " >/dev/null 2>" + r0 +
                             ".err; echo $? >" + r0 + ".rc) </dev/null & (" + vars +
                             "RANK=1 LOCAL_RANK=1 exec " + cmd + " >/dev/null 2>" + r1 +
                             ".err) </dev/null & echo $! >" + r1 + ".pid";
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()), 0);
  // Training has started once rank 0 logged a step.
  const auto started = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(out + "/metrics.jsonl") ||
         std::filesystem::file_size(out + "/metrics.jsonl") == 0) {
    ASSERT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(120))
        << read_file(r0 + ".err") << read_file(r1 + ".err");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const pid_t pid1 = std::stoi(read_file(r1 + ".pid"));
  ASSERT_EQ(kill(pid1, signal), 0);
  const auto signalled = std::chrono::steady_clock::now();
  bool stopped = true;
  while (!std::filesystem::exists(r0 + ".rc") || read_file(r0 + ".rc").empty()) {
    if (std::chrono::steady_clock::now() - signalled > limit) {
      stopped = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (signal != SIGKILL) kill(pid1, SIGKILL);
  ASSERT_TRUE(stopped) << "rank 0 still running " << limit.count() << " s after signal " << signal
                       << " to rank 1";
  EXPECT_NE(std::stoi(read_file(r0 + ".rc")), 0);
  const std::string err = read_file(r0 + ".err");
  EXPECT_NE(err.find("lost rank 1"), std::string::npos) << err;
  std::cerr << "rank 0 stopped "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count()
            << " s after signal " << signal << ": "
            << err.substr(std::min(err.size(), err.rfind("error:"))) << "\n";
}

TEST(Dist, ARankKilledWithSigkillStopsTheOtherNamingIt) {
  expect_rank_zero_names_rank_one("dist-killed", SIGKILL, "", std::chrono::seconds(60));
}

// A hung rank (stopped, its sockets open) is found by the collective's timeout, then named by
// its stalled heartbeat.
TEST(Dist, AHungRankStopsTheOtherAtTheTimeoutNamingIt) {
  expect_rank_zero_names_rank_one("dist-hung", SIGSTOP, "SLIMBERT_DIST_TIMEOUT=10",
                                  std::chrono::seconds(40));
}

TEST(Dist, LaunchForwardsSigtermToItsRanksAndReportsEach) {
  const test::World& w = test::world();
  const std::string out = test::world().dir / "dist-term";
  const std::string cmd = std::string(SLIMBERT_CLI) + " launch --nproc 2 --master-port " +
                          std::to_string(free_port()) + " -- pretrain --init " + w.init +
                          " --shards " + w.shards + " --out " + out +
                          " --steps 100000 --batch-size 8 --log-every 1 --eval-every 0"
                          " --save-every 0 --threads 1";
  const std::string script = "(exec " + cmd + " >/dev/null 2>" + out + ".err; ) </dev/null & " +
                             "p=$!; echo $p >" + out + ".pid; wait $p; echo $? >" + out + ".rc";
  ASSERT_EQ(std::system(("sh -c '" + script + "' &").c_str()), 0);
  const auto started = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(out + "/metrics.jsonl") ||
         std::filesystem::file_size(out + "/metrics.jsonl") == 0) {
    ASSERT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(120))
        << read_file(out + ".err");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  while (!std::filesystem::exists(out + ".pid") || read_file(out + ".pid").empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(kill(std::stoi(read_file(out + ".pid")), SIGTERM), 0);
  const auto signalled = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(out + ".rc") || read_file(out + ".rc").empty()) {
    ASSERT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(30))
        << "launch still running 30 s after SIGTERM";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(std::stoi(read_file(out + ".rc")), 0);
  const std::string err = read_file(out + ".err");
  EXPECT_NE(err.find("launch: rank 0 killed by signal 15"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 killed by signal 15"), std::string::npos) << err;
}

// Two machines, as far as the network goes: each rank in its own network namespace, joined by a
// veth pair, launched as node 0 and node 1 of a two-node run (Gloo over that interface).
TEST(Dist, TwoNodesInTwoNetworkNamespacesEqualOneRank) {
  const std::string id = std::to_string(getpid() % 100000);
  const std::string a = "sbA" + id, b = "sbB" + id,
                    subnet = "10.231." + std::to_string(getpid() % 250);
  const std::string setup =
      "ip netns add " + a + " && ip netns add " + b + " && ip link add " + a + " netns " + a +
      " type veth peer name " + b + " netns " + b + " && ip -n " + a + " addr add " + subnet +
      ".1/24 dev " + a + " && ip -n " + b + " addr add " + subnet + ".2/24 dev " + b +
      " && ip -n " + a + " link set " + a + " up && ip -n " + b + " link set " + b +
      " up && ip -n " + a + " link set lo up && ip -n " + b + " link set lo up";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      (void)std::system(
          ("ip netns del " + a + " 2>/dev/null; ip netns del " + b + " 2>/dev/null").c_str());
    }
  } cleanup{a, b};
  if (std::system((setup + " 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot create network namespaces here (needs root and iproute2)";
  const DistWorld& w = dist_world();
  const std::string one = w.dir / "ns-1", two = w.dir / "ns-2";
  ASSERT_EQ(test::run_cli(pretrain_args(w.init, one) + " --threads 1").code, 0);
  const std::string launch = std::string(SLIMBERT_CLI) +
                             " launch --nproc 1 --nnodes 2 --master-addr " + subnet +
                             ".1 --master-port 29500 --node-rank ";
  const std::string node = [&](const std::string& ns, int rank) {
    return "ip netns exec " + ns + " env GLOO_SOCKET_IFNAME=" + ns + " " + launch +
           std::to_string(rank) + " -- " + pretrain_args(w.init, two) +
           " --threads 1 >/dev/null 2>" + two + "-node" + std::to_string(rank) + ".err";
  }(a, 0);
  const std::string node1 = "ip netns exec " + b + " env GLOO_SOCKET_IFNAME=" + b + " " + launch +
                            "1 -- " + pretrain_args(w.init, two) + " --threads 1 >/dev/null 2>" +
                            two + "-node1.err";
  const int rc = std::system(
      ("sh -c '" + node + " & " + node1 + "; r1=$?; wait $!; r0=$?; " + "exit $((r0 + r1))'")
          .c_str());
  ASSERT_EQ(rc, 0) << read_file(two + "-node0.err") << read_file(two + "-node1.err");
  expect_close_weights(one + "/model", two + "/model", 1e-5);
}

}  // namespace
}  // namespace slimbert
