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
#if defined(SLIMBERT_EXPECT_NCCL) && !defined(USE_C10D_NCCL)
#error \
    "slimbert_nccl_check: NCCL's or c10d's NCCL headers are not found; the branch is not compiled"
#endif
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <mutex>
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

// A failed collective names the lost rank instead of passing on Gloo's socket error.
[[noreturn]] void collective_failed(const char* what, const std::exception& e) {
  std::string cause = e.what();
  if (const size_t nl = cause.find('\n'); nl != std::string::npos) cause.resize(nl);
  if (const size_t br = cause.rfind("] "); br != std::string::npos) cause = cause.substr(br + 2);
  fail("rank ", group().info.rank, " of ", group().info.world, ": ", what, " failed: lost ",
       lost_ranks(), " (", cause, ")");
}

// Waits for `work`.
void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    collective_failed(what, e);
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

struct GradientReducer::State {
  struct Bucket {
    std::vector<size_t> params;  // indices into `params`
    int64_t numel = 0;
    size_t pending = 0;            // parameters backward has not completed since arm()
    std::vector<at::Tensor> flat;  // the gradients, then per parameter the ranks that had one
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<at::Tensor> params;
  std::vector<size_t> bucket_of;
  std::vector<Bucket> buckets;
  std::vector<bool> ready;
  size_t next = 0;     // the next bucket to start: they start in order on every rank
  size_t pending = 0;  // parameters backward has not completed since arm(), over all buckets
  int64_t early = 0;   // gradient elements whose all-reduce started while others were pending
  bool armed = false;
  std::exception_ptr error;  // from a start inside backward, raised by finish()
  std::mutex mutex;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks;

  void start(Bucket& b) {
    std::vector<at::Tensor> parts;
    std::vector<double> had(b.params.size());
    for (size_t k = 0; k < b.params.size(); ++k) {
      const at::Tensor& p = params[b.params[k]];
      const at::Tensor& g = p.grad();
      had[k] = g.defined() ? 1 : 0;
      parts.push_back(g.defined() ? g.reshape(-1) : at::zeros({p.numel()}, p.options()));
    }
    parts.push_back(at::tensor(had, at::kDouble).to(parts.front().scalar_type()));
    // On the compute device: NCCL reduces device tensors only (a no-op for Gloo on the CPU).
    b.flat = {at::cat(parts).to(compute_device())};
    b.work = group().pg->allreduce(b.flat);
  }

  // A parameter's gradient accumulated (called inside backward).
  void completed(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed || ready[i] || error) return;
    ready[i] = true;
    --buckets[bucket_of[i]].pending;
    --pending;
    try {
      while (next < buckets.size() && buckets[next].pending == 0) {
        start(buckets[next]);
        if (pending > 0) early += buckets[next].numel;
        ++next;
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
};

namespace {

// Runs after a parameter's gradient accumulator has added this backward's gradient to .grad.
class CompletedHook : public torch::autograd::FunctionPostHook {
 public:
  CompletedHook(std::weak_ptr<GradientReducer::State> state, size_t index)
      : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    if (auto state = state_.lock()) state->completed(index_);
    return outputs;
  }

 private:
  std::weak_ptr<GradientReducer::State> state_;
  size_t index_;
};

}  // namespace

GradientReducer::GradientReducer(const std::vector<at::Tensor>& params)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.params = params;
  s.bucket_of.resize(params.size());
  s.ready.assign(params.size(), false);
  s.pending = params.size();
  const int64_t kb = env_int("SLIMBERT_DIST_BUCKET_KB", 1, 1 << 22, 0, false);
  int64_t bytes = 0;
  for (size_t n = params.size(); n-- > 0;) {
    const at::Tensor& p = params[n];
    const int64_t cap = kb > 0 ? kb << 10 : s.buckets.size() <= 1 ? int64_t{1} << 20 : 25 << 20;
    const bool other_type =
        !s.buckets.empty() &&
        params[s.buckets.back().params.front()].scalar_type() != p.scalar_type();
    if (s.buckets.empty() || other_type ||
        (bytes > 0 && bytes + static_cast<int64_t>(p.nbytes()) > cap)) {
      s.buckets.emplace_back();
      bytes = 0;
    }
    State::Bucket& b = s.buckets.back();
    b.params.push_back(n);
    b.numel += p.numel();
    b.pending = b.params.size();
    bytes += static_cast<int64_t>(p.nbytes());
    s.bucket_of[n] = s.buckets.size() - 1;
    // Held here: a parameter keeps only a weak reference to its accumulator, and the hook must
    // stay on the one every later graph uses.
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(p);
    if (!acc) fail("gradient all-reduce: parameter ", n, " is not a leaf that requires grad");
    const uintptr_t key = acc->add_post_hook(std::make_unique<CompletedHook>(state_, n));
    s.hooks.emplace_back(std::move(acc), key);
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [acc, key] : state_->hooks) acc->del_post_hook(key);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->armed = true;
}

double GradientReducer::finish() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.error) {
    try {
      std::rethrow_exception(s.error);
    } catch (const std::exception& e) {
      collective_failed("gradient all-reduce", e);
    }
  }
  int64_t all = 0;
  for (const State::Bucket& b : s.buckets) all += b.numel;
  const double overlap = all > 0 ? static_cast<double>(s.early) / static_cast<double>(all) : 0.0;
  while (s.next < s.buckets.size()) s.start(s.buckets[s.next++]);
  for (State::Bucket& b : s.buckets) {
    wait(b.work, "gradient all-reduce");
    const at::Tensor flat = b.flat[0];
    const at::Tensor had =
        flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size())).to(at::kCPU, at::kDouble);
    const double* ranks = had.data_ptr<double>();
    int64_t at = 0;
    for (size_t k = 0; k < b.params.size(); ++k) {
      at::Tensor& p = s.params[b.params[k]];
      if (ranks[k] > 0) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        p.mutable_grad().copy_(flat.narrow(0, at, p.numel()).view_as(p));
      }
      at += p.numel();
    }
    b.work.reset();
    b.flat.clear();
    b.pending = b.params.size();
  }
  std::fill(s.ready.begin(), s.ready.end(), false);
  s.next = 0;
  s.pending = s.params.size();
  s.early = 0;
  s.armed = false;
  return overlap;
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
