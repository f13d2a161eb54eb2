// Process-wide runtime settings: the device models run on, who owns the CPU threads, and a
// start-up check that the BLAS behind libtorch is a fast one.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace slimbert {

// Thread ownership. OpenBLAS (pthread build) runs its own pool for matrix products; libtorch's
// intra-op pool parallelises the element-wise ops. Both at once oversubscribe small machines
// (ENVIRONMENT.md), so by default OpenBLAS gets `threads` and libtorch 1.
struct RuntimeConfig {
  int threads = 0;             // 0: all hardware threads
  bool torch_intra = false;    // true: libtorch intra-op threads = threads, OpenBLAS = 1
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
};
// Sets the threads and the compute device; fails with a clear message when the device is not
// available (a CPU-only libtorch, no GPU, an index past the last GPU).
// Also keeps freed memory in the heap (see keep_freed_memory).
void configure_runtime(const RuntimeConfig& config);
// Large freed blocks stay in the process instead of going back to the kernel, so that each
// forward pass does not page-fault its activations in again.
void keep_freed_memory();
std::string describe_threads();  // "openblas=2 torch=1"

// The device every model and batch of this process runs on (CPU unless configured). Data is
// prepared on the CPU and moved here batch by batch; checkpoints are always written from CPU
// copies, so what a GPU run saves is the same file a CPU run saves.
c10::Device compute_device();
void set_compute_device(c10::Device device);
c10::Device parse_device(const std::string& text);  // validated: available, index in range
// Waits until `device` has finished its queued work (GPU kernels run asynchronously): call it
// before reading a clock. Nothing to wait for on the CPU.
void synchronize(c10::Device device);

// OpenBLAS's kernel family ("Haswell", "Cooperlake", ...); "" when the BLAS is not OpenBLAS.
// OPENBLAS_CORETYPE in the environment overrides its CPU detection (docs/PERFORMANCE.md).
std::string blas_core_name();

// Measures a float32 matrix product and returns GFLOP/s.
double measure_matmul_gflops(int size = 512, int repeats = 3);

}  // namespace slimbert
