// Data-parallel training across processes on libtorch's c10d: Gloo on the CPU (NCCL for CUDA in
// a CUDA build). Ranks meet through torchrun's environment variables (MASTER_ADDR, MASTER_PORT,
// RANK, WORLD_SIZE, LOCAL_RANK), so torchrun, `slimbert launch`, Slurm or Kubernetes start a run
// unchanged. Like the compute device, the process group is process-wide: a process belongs to
// one run.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
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

// Sums each tensor over the ranks, in place: packed into flat buckets of about `bucket_bytes`,
// launched together, then waited for. Every rank passes tensors of the same shapes in the same
// order.
void all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 32 << 20);
double all_reduce_sum(double value);
// The same tensor from every rank, in rank order (same shape on every rank).
std::vector<at::Tensor> all_gather(const at::Tensor& tensor);
// Copies rank 0's values of `tensors` to every rank.
void broadcast_from_main(const std::vector<at::Tensor>& tensors);
void barrier();

}  // namespace slimbert
