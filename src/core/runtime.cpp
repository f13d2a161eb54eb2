#include "slimbert/core/runtime.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <torch/cuda.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "slimbert/core/error.h"

namespace slimbert {
namespace {

// OpenBLAS's runtime controls, looked up dynamically: libtorch links the generic libblas.so.3.
using SetThreads = void (*)(int);
using GetThreads = int (*)();

SetThreads openblas_set() {
  return reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
}
GetThreads openblas_get() {
  return reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
}

using CoreName = const char* (*)();

}  // namespace

std::string blas_core_name() {
  auto get = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return get ? std::string(get()) : std::string();
}

namespace {
c10::Device g_compute_device = c10::Device(c10::kCPU);
}  // namespace

c10::Device compute_device() {
  return g_compute_device;
}
void set_compute_device(c10::Device device) {
  g_compute_device = device;
}

c10::Device parse_device(const std::string& text) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(text);
  } catch (const std::exception&) {
    fail("--device: '", text, "' is not a device; expected cpu, cuda or cuda:N");
  }
  if (device.is_cpu()) return device;
  if (!device.is_cuda()) fail("--device: '", text, "': only cpu and cuda are supported");
  if (!at::hasCUDA())
    fail("--device ", text, ": this build's libtorch has no CUDA support or no GPU is visible");
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (device.has_index() && device.index() >= count)
    fail("--device ", text, ": only ", count, " GPU(s) visible");
  if (!device.has_index()) device.set_index(0);
  return device;
}

void synchronize(c10::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

void keep_freed_memory() {
  // glibc serves blocks over 128 KiB-32 MiB (its threshold moves) with fresh mmaps and gives them
  // back on free, so every forward pass page-faults its activations in again: at batch 8 x 128
  // that was most of the time (perf: exc_page_fault, memset). Keeping freed blocks in the heap
  // made the mini model's batch-8 forward 1.4x faster in fp32 and 7x faster in int8 on the
  // 2-core machine (docs/PERFORMANCE.md). RSS then stays at the peak working set.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

void configure_runtime(const RuntimeConfig& config) {
  keep_freed_memory();
  set_compute_device(parse_device(config.device));
  // 0: OMP_NUM_THREADS where set (torchrun and `slimbert launch` give each rank its share of the
  // cores there), else every core.
  if (config.threads < 0)
    fail("--threads must be 0 (every core) or a positive count, got ", config.threads);
  int n = config.threads;
  if (n <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    n = omp && std::atoi(omp) > 0
            ? std::atoi(omp)
            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  static bool warned = false;
  if (n > cores && !warned) {
    warned = true;
    std::cerr << "slimbert: warning: " << n << " threads on " << cores
              << " cores: threads that wait for a core slow every matrix product down (--threads "
                 "0 uses every core)\n";
  }
  SetThreads set = openblas_set();
  if (config.torch_intra) {
    at::set_num_threads(n);
    if (set) set(1);
  } else {
    at::set_num_threads(1);
    if (set) set(n);
  }
}

std::string describe_threads() {
  GetThreads get = openblas_get();
  return cat(
      "openblas=", get ? std::to_string(get()) + " (" + blas_core_name() + ")" : std::string("n/a"),
      " torch=", at::get_num_threads());
}

double measure_matmul_gflops(int size, int repeats) {
  at::NoGradGuard no_grad;
  // A private generator: measuring must not advance the global one (exact resume depends on it).
  // On the compute device, so that MFU on a GPU is against the GPU's float32 rate.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const c10::Device device = compute_device();
  if (device.is_cuda()) size = std::max(size, 4096);  // small products leave a GPU idle
  at::Tensor a = at::randn({size, size}, gen).to(device);
  at::Tensor b = at::randn({size, size}, gen).to(device);
  at::Tensor c = at::mm(a, b);  // warm-up
  synchronize(device);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    synchronize(device);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * size * size * size / s / 1e9);
  }
  return best;
}

}  // namespace slimbert
