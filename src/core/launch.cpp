#include "slimbert/core/launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "slimbert/core/error.h"

namespace slimbert {
namespace {

// The children, for the signal handler (async-signal-safe: a fixed array and kill()).
constexpr int kMaxRanks = 1024;
pid_t g_children[kMaxRanks];
volatile sig_atomic_t g_count = 0;

void forward_signal(int sig) {
  for (int i = 0; i < g_count; ++i)
    if (g_children[i] > 0) kill(g_children[i], sig);
}

}  // namespace

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

int launch_ranks(const LaunchOptions& o, const std::string& program,
                 const std::vector<std::string>& args) {
  if (o.nproc < 1 || o.nproc > kMaxRanks) fail("launch: --nproc must be in [1, ", kMaxRanks, "]");
  if (o.nnodes < 1) fail("launch: --nnodes must be at least 1");
  if (o.node_rank < 0 || o.node_rank >= o.nnodes)
    fail("launch: --node-rank ", o.node_rank, " is not in [0, ", o.nnodes - 1, "]");
  if (o.master_port < 1 || o.master_port > 65535)
    fail("launch: --master-port ", o.master_port, " is not in [1, 65535]");
  if (args.empty()) fail("launch: no command after -- (e.g. -- pretrain --init ...)");
  const int world = o.nproc * o.nnodes;
  // One share of the cores per rank unless the user chose.
  const std::string threads = std::to_string(
      std::max(1u, std::thread::hardware_concurrency() / static_cast<unsigned>(o.nproc)));

  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> pids;
  for (int local = 0; local < o.nproc; ++local) {
    const int rank = o.node_rank * o.nproc + local;
    const pid_t pid = fork();
    if (pid < 0) {
      forward_signal(SIGTERM);
      fail("launch: cannot start rank ", rank, ": ", std::strerror(errno));
    }
    if (pid == 0) {
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      setenv("GROUP_RANK", std::to_string(o.node_rank).c_str(), 1);
      setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(o.master_port).c_str(), 1);
      setenv("OMP_NUM_THREADS", threads.c_str(), 0);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program.c_str()));
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(program.c_str(), argv.data());
      std::cerr << "launch: rank " << rank << ": cannot run " << program << ": "
                << std::strerror(errno) << "\n";
      _exit(127);
    }
    pids.push_back(pid);
    g_children[local] = pid;
    g_count = local + 1;
  }

  std::vector<int> status(pids.size(), 0);
  std::vector<bool> done(pids.size(), false);
  size_t remaining = pids.size();
  int first_failure = -1;
  auto failed_at = std::chrono::steady_clock::time_point{};
  bool terminated = false, killed = false;
  while (remaining > 0) {
    int st = 0;
    const pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (pids[i] == pid && !done[i]) {
          done[i] = true;
          status[i] = st;
          g_children[i] = 0;
          --remaining;
          const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
          if (!ok && first_failure < 0) {
            first_failure = static_cast<int>(i);
            failed_at = std::chrono::steady_clock::now();
            std::cerr << "launch: rank " << o.node_rank * o.nproc + static_cast<int>(i) << " "
                      << describe_exit(st) << "\n";
          }
        }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (first_failure >= 0) {
      const double since =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - failed_at).count();
      if (!terminated && since > o.grace_seconds) {
        std::cerr << "launch: stopping the ranks still running " << o.grace_seconds
                  << " s after rank " << o.node_rank * o.nproc + first_failure << " failed\n";
        forward_signal(SIGTERM);
        terminated = true;
      } else if (terminated && !killed && since > o.grace_seconds + 10) {
        forward_signal(SIGKILL);
        killed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  g_count = 0;
  std::string summary;
  for (size_t i = 0; i < pids.size(); ++i)
    summary += (i ? ", rank " : "rank ") +
               std::to_string(o.node_rank * o.nproc + static_cast<int>(i)) + " " +
               describe_exit(status[i]);
  std::cerr << "launch: " << summary << "\n";
  if (first_failure < 0) return 0;
  const int st = status[static_cast<size_t>(first_failure)];
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace slimbert
