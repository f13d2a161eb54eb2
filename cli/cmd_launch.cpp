// `slimbert launch`: the ranks of a data-parallel training run on this machine.
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "commands.h"
#include "slimbert/core/error.h"
#include "slimbert/core/launch.h"

namespace slimbert::cli {

void add_launch(CLI::App& app) {
  struct Opts {
    LaunchOptions launch;
    std::vector<std::string> command;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "launch",
      "run a training command data-parallel: --nproc ranks here (times --nnodes machines), "
      "with torchrun's environment; e.g. launch --nproc 2 -- pretrain --init ...");
  cmd->add_option("--nproc", o->launch.nproc, "ranks on this machine")
      ->check(CLI::Range(1, 1024).description("1 to 1024"))
      ->capture_default_str();
  cmd->add_option("--nnodes", o->launch.nnodes, "machines in the run")
      ->check(CLI::Range(1, 65536).description("1 to 65536"))
      ->capture_default_str();
  cmd->add_option("--node-rank", o->launch.node_rank, "this machine's index, 0 to nnodes - 1")
      ->capture_default_str();
  cmd->add_option("--master-addr", o->launch.master_addr,
                  "address of machine 0, where rank 0 holds the rendezvous")
      ->capture_default_str();
  cmd->add_option("--master-port", o->launch.master_port, "its port")
      ->check(CLI::Range(1, 65535).description("1 to 65535"))
      ->capture_default_str();
  cmd->add_option("--grace", o->launch.grace_seconds,
                  "seconds the other ranks get to exit after one fails, before they are stopped")
      ->check(CLI::Range(0, 86400).description("0 to 86400"))
      ->capture_default_str();
  cmd->add_option("command", o->command, "after --: the slimbert command each rank runs")
      ->required();
  cmd->callback([o] {
    char self[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) fail("launch: cannot find this program (/proc/self/exe)");
    self[n] = '\0';
    if (!o->command.empty() && o->command[0] == "launch")
      fail("launch: the command cannot be launch");
    const int code = launch_ranks(o->launch, self, o->command);
    if (code != 0) std::exit(code);
  });
}

}  // namespace slimbert::cli
