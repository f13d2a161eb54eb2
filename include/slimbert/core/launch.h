// `slimbert launch`: starts the ranks of a data-parallel run on this machine with torchrun's
// environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
// MASTER_PORT), forwards SIGINT/SIGTERM to them and reports how each ended. Torch-free.
#pragma once

#include <string>
#include <vector>

namespace slimbert {

struct LaunchOptions {
  int nproc = 1;   // ranks on this machine
  int nnodes = 1;  // machines
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // After a rank fails, how long the others get to notice and exit before they are stopped.
  int grace_seconds = 60;
};

// How one rank ended, in words: "exit 0", "exit 1", "killed by signal 9 (Killed)".
std::string describe_exit(int wait_status);

// Runs `program args...` once per local rank and waits for all of them. Returns 0 when every rank
// exits 0, else the exit code of the first rank that failed (128 + signal when killed).
int launch_ranks(const LaunchOptions& options, const std::string& program,
                 const std::vector<std::string>& args);

}  // namespace slimbert
