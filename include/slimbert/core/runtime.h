// Process-wide runtime settings: who owns the CPU threads, and a start-up check that the BLAS
// behind libtorch is a fast one.
#pragma once

#include <string>

namespace slimbert {

// Thread ownership. OpenBLAS (pthread build) runs its own pool for matrix products; libtorch's
// intra-op pool parallelises the element-wise ops. Both at once oversubscribe small machines
// (ENVIRONMENT.md), so by default OpenBLAS gets `threads` and libtorch 1.
struct ThreadConfig {
  int threads = 0;           // 0: all hardware threads
  bool torch_intra = false;  // true: libtorch intra-op threads = threads, OpenBLAS = 1
};
void configure_threads(const ThreadConfig& config);
std::string describe_threads();  // "openblas=2 torch=1"

// OpenBLAS's kernel family ("Haswell", "Cooperlake", ...); "" when the BLAS is not OpenBLAS.
// OPENBLAS_CORETYPE in the environment overrides its CPU detection (docs/PERFORMANCE.md).
std::string blas_core_name();

// Measures a float32 matrix product and returns GFLOP/s; warns on stderr when it is far below
// what an optimised BLAS gives (the reference BLAS runs ~35x slower).
double measure_matmul_gflops(int size = 512, int repeats = 3);
void check_blas(bool verbose = false);

}  // namespace slimbert
