#include "slimbert/core/dist.h"

// c10d's Gloo and NCCL process groups are declared only when their libraries' headers are there
// (Debian: libgloo-dev; a CUDA libtorch with NCCL's headers).
#if __has_include(<gloo/config.h>)
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if __has_include(<nccl.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "slimbert/core/error.h"
#include "slimbert/core/runtime.h"

namespace slimbert {
namespace {

struct Group {
  DistInfo info;
  std::chrono::seconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::thread heartbeat;
  std::atomic<bool> stop{false};
};

Group& group() {
  static Group g;
  return g;
}

int env_int(const char* name, int lo, int hi, int fallback, bool required) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required)
      fail("distributed run: ", name, " is not set (torchrun's variables: MASTER_ADDR, ",
           "MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK)");
    return fallback;
  }
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi)
    fail("distributed run: ", name, "=", v, ": expected an integer in [", lo, ", ", hi, "]");
  return static_cast<int>(x);
}

// The rendezvous store's options. Every rank's first connection counts towards the `world`
// connections the server waits for; the heartbeat's and the failure check's do not.
c10d::TCPStoreOptions store_options(const DistInfo& info, bool server, bool counted,
                                    std::chrono::milliseconds t) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(info.master_port);
  o.isServer = server;
  if (counted) o.numWorkers = static_cast<size_t>(info.world);
  o.waitWorkers = counted;
  o.timeout = t;
  return o;
}

std::string heartbeat_key(int rank) {
  return "slimbert/heartbeat/" + std::to_string(rank);
}

// Every second, each rank advances a counter in the store; a rank whose counter stands still has
// stopped. Its own connection: the store client is not shared across threads.
void run_heartbeat(DistInfo info) {
  try {
    c10d::TCPStore store(info.master_addr,
                         store_options(info, false, false, std::chrono::seconds(10)));
    while (!group().stop) {
      store.add(heartbeat_key(info.rank), 1);
      for (int i = 0; i < 10 && !group().stop; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception&) {
    // The store went away with rank 0: the next collective reports it.
  }
}

// The ranks whose heartbeat stopped, as words ("rank 1", "ranks 1, 3"); rank 0 when its store
// cannot be reached.
std::string lost_ranks() {
  const DistInfo& info = group().info;
  try {
    c10d::TCPStore store(info.master_addr,
                         store_options(info, false, false, std::chrono::seconds(3)));
    auto counts = [&] {
      std::vector<int64_t> c;
      for (int r = 0; r < info.world; ++r) c.push_back(store.add(heartbeat_key(r), 0));
      return c;
    };
    const std::vector<int64_t> before = counts();
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    const std::vector<int64_t> after = counts();
    std::string lost;
    int n = 0;
    for (int r = 0; r < info.world; ++r)
      if (r != info.rank && after[static_cast<size_t>(r)] == before[static_cast<size_t>(r)]) {
        lost += (n++ ? ", " : "") + std::to_string(r);
      }
    if (n == 0) return "no rank (all still alive; the network between them failed or timed out)";
    return (n == 1 ? "rank " : "ranks ") + lost;
  } catch (const std::exception&) {
    return "rank 0 (its rendezvous store at " + info.master_addr + ":" +
           std::to_string(info.master_port) + " does not answer)";
  }
}

// Waits for `work`; a failure names the lost rank instead of passing on Gloo's socket error.
void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    std::string cause = e.what();
    if (const size_t nl = cause.find('\n'); nl != std::string::npos) cause.resize(nl);
    if (const size_t br = cause.rfind("] "); br != std::string::npos) cause = cause.substr(br + 2);
    fail("rank ", group().info.rank, " of ", group().info.world, ": ", what, " failed: lost ",
         lost_ranks(), " (", cause, ")");
  }
}

}  // namespace

DistInfo dist_info_from_environment() {
  DistInfo info;
  info.world = env_int("WORLD_SIZE", 1, 1 << 16, 1, false);
  if (info.world == 1) return info;
  info.rank = env_int("RANK", 0, info.world - 1, 0, true);
  info.local_rank = env_int("LOCAL_RANK", 0, info.world - 1, 0, false);
  info.master_port = env_int("MASTER_PORT", 1, 65535, 0, true);
  const char* addr = std::getenv("MASTER_ADDR");
  info.master_addr = addr && *addr ? addr : "127.0.0.1";
  return info;
}

void init_distributed(const DistInfo& info, std::chrono::seconds timeout) {
  Group& g = group();
  g.info = info;
  g.timeout = timeout;
  if (info.world == 1) return;
  if (g.pg) fail("init_distributed: this process already joined a group");
  try {
    g.store = c10::make_intrusive<c10d::TCPStore>(
        info.master_addr, store_options(info, info.rank == 0, true, timeout));
  } catch (const std::exception& e) {
    fail("rank ", info.rank, ": cannot reach the rendezvous at ", info.master_addr, ":",
         info.master_port, " within ", timeout.count(), " s (", e.what(), ")");
  }
  if (compute_device().is_cuda()) {
#ifdef USE_C10D_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    g.pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(g.store, info.rank, info.world, opts);
#else
    fail("distributed training on CUDA needs NCCL: this build has no NCCL process group");
#endif
  } else {
#ifdef USE_C10D_GLOO
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = timeout;
    // As torch.distributed: GLOO_SOCKET_IFNAME picks the interface, else this host's address.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    opts->devices.push_back(ifname && *ifname
                                ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    try {
      g.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g.store, info.rank, info.world, opts);
    } catch (const std::exception& e) {
      fail("rank ", info.rank, ": cannot connect to the other ranks (", e.what(), ")");
    }
#else
    fail("distributed training needs Gloo: this build has no Gloo process group");
#endif
  }
  g.stop = false;
  g.heartbeat = std::thread(run_heartbeat, info);
  std::atexit(shutdown_distributed);
}

void shutdown_distributed() {
  Group& g = group();
  g.stop = true;
  if (g.heartbeat.joinable()) g.heartbeat.join();
  g.pg.reset();
  g.store.reset();
}

const DistInfo& dist() {
  return group().info;
}

void all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  if (!distributed() || tensors.empty()) return;
  // Buckets of consecutive tensors; each flattened, reduced, and copied back.
  std::vector<std::vector<at::Tensor>> buckets(1);
  int64_t bytes = 0;
  for (const at::Tensor& t : tensors) {
    if (bytes > 0 && bytes + static_cast<int64_t>(t.nbytes()) > bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(t);
    bytes += static_cast<int64_t>(t.nbytes());
  }
  std::vector<std::vector<at::Tensor>> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& b : buckets) {
    std::vector<at::Tensor> parts;
    for (const at::Tensor& t : b) parts.push_back(t.reshape(-1));
    // On the compute device: NCCL reduces device tensors only (a no-op for Gloo on the CPU).
    flats.push_back({at::cat(parts).to(compute_device())});
    works.push_back(group().pg->allreduce(flats.back()));
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    wait(works[i], "gradient all-reduce");
    int64_t at = 0;
    for (const at::Tensor& t : buckets[i]) {
      t.copy_(flats[i][0].narrow(0, at, t.numel()).view_as(t));
      at += t.numel();
    }
  }
}

double all_reduce_sum(double value) {
  if (!distributed()) return value;
  std::vector<at::Tensor> t{at::tensor({value}, at::kDouble).to(compute_device())};
  wait(group().pg->allreduce(t), "all-reduce");
  return t[0].item<double>();
}

std::vector<at::Tensor> all_gather(const at::Tensor& tensor) {
  if (!distributed()) return {tensor};
  std::vector<at::Tensor> in{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < dist().world; ++r) out[0].push_back(at::empty_like(in[0]));
  wait(group().pg->allgather(out, in), "all-gather");
  return out[0];
}

void broadcast_from_main(const std::vector<at::Tensor>& tensors) {
  if (!distributed()) return;
  for (const at::Tensor& t : tensors) {
    std::vector<at::Tensor> one{t};
    wait(group().pg->broadcast(one), "broadcast");
  }
}

void barrier() {
  if (!distributed()) return;
  wait(group().pg->barrier(), "barrier");
}

}  // namespace slimbert
