// Forward latency of the inference model, measured here: what bench, the grid, the latency
// profile, the engine choice and the server's warm-up time.
#pragma once

#include <cstdint>
#include <vector>

#include "slimbert/infer/model.h"

namespace slimbert::infer {

// Forward latency at `subnet` on random tokens (batch x seq, no padding), in ms.
struct Latency {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};
Latency measure_latency(const InferenceModel& model, int64_t batch, int64_t seq,
                        const SubNet& subnet, int64_t iters, int64_t warmup);
// Nearest-rank percentile p (0-100) of `values` (not empty).
double percentile(std::vector<double> values, double p);

}  // namespace slimbert::infer
