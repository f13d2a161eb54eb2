// Data-parallel training across processes on libtorch's c10d: Gloo on the CPU (NCCL for CUDA in
// a CUDA build). Ranks meet through torchrun's environment variables (MASTER_ADDR, MASTER_PORT,
// RANK, WORLD_SIZE, LOCAL_RANK), so torchrun, `slimbert launch`, Slurm or Kubernetes start a run
// unchanged. Like the compute device, the process group is process-wide: a process belongs to
// one run.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace slimbert {

struct DistInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr;
  int master_port = 0;
};

// The rendezvous described by the environment; world 1 when WORLD_SIZE is unset. Fails with a
// message naming the variable when one is missing or out of range.
DistInfo dist_info_from_environment();

// Joins the process group of `info` (nothing to do for world 1). `timeout` bounds the rendezvous
// and every collective: a rank that stops answering fails the others after it, naming it. A rank
// that dies is noticed at once (its connections close).
void init_distributed(const DistInfo& info, std::chrono::seconds timeout);
// Leaves the group (at the end of a command; also on exit).
void shutdown_distributed();

const DistInfo& dist();
inline bool is_main_rank() {
  return dist().rank == 0;
}
inline bool distributed() {
  return dist().world > 1;
}

// Sums a model's gradients over the ranks while backward runs, as DDP does. The parameters go
// into flat buckets in reverse order (about the order backward reaches them); once armed, each
// bucket's all-reduce starts as soon as backward has accumulated every gradient in it (hooks on
// the parameters' gradient accumulators), buckets in the same order on every rank, so the last
// layers' sums travel while the first layers' gradients are computed. finish() starts the
// buckets backward did not complete (parameters it did not reach, a rank that got no rows),
// waits for all and writes the sums back. A parameter with no gradient on some rank takes part
// with zeros; one with no gradient on any rank keeps none (an optimizer skips it), as in one
// process. Buckets hold 1 MiB first (it starts soonest), then 25 MiB (DDP's sizes), or
// SLIMBERT_DIST_BUCKET_KB each where set. Every rank passes the same parameters.
class GradientReducer {
 public:
  explicit GradientReducer(const std::vector<at::Tensor>& params);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;
  // The next backward is the last before the update: its completed buckets are reduced at once.
  void arm();
  // After that backward, before anything reads a gradient. Returns the share of the gradient
  // elements whose all-reduce started while backward still had gradients to accumulate (the
  // overlap, 0 to 1: 0 with one bucket).
  double finish();

  struct State;  // defined with the hooks that share it

 private:
  std::shared_ptr<State> state_;
};

double all_reduce_sum(double value);
// The same tensor from every rank, in rank order (same shape on every rank).
std::vector<at::Tensor> all_gather(const at::Tensor& tensor);
// Copies rank 0's values of `tensors` to every rank.
void broadcast_from_main(const std::vector<at::Tensor>& tensors);
void barrier();

}  // namespace slimbert
