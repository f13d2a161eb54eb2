#include "slimbert/infer/latency.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "slimbert/core/error.h"
#include "slimbert/core/runtime.h"

namespace slimbert::infer {

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const size_t rank =
      static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

Latency measure_latency(const InferenceModel& model, int64_t batch, int64_t seq,
                        const SubNet& subnet, int64_t iters, int64_t warmup) {
  const BertConfig& config = model.config();
  if (seq > config.max_sequence_length())
    fail("sequence length ", seq, " exceeds the model's longest input of ",
         config.max_sequence_length(), " tokens (max_position_embeddings)");
  if (iters <= 0) fail("latency: iterations must be positive");
  // Its own generator: timing must not change the global random stream.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const c10::Device device = model.device();
  const Batch input = Batch{at::randint(std::min<int64_t>(1000, config.vocab_size - 1),
                                        config.vocab_size, {batch, seq}, gen, at::kLong),
                            at::zeros({batch, seq}, at::kLong), at::ones({batch, seq}, at::kLong)}
                          .to(device);
  for (int64_t i = 0; i < warmup; ++i) model.forward(input, subnet);
  synchronize(device);
  std::vector<double> ms;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(input, subnet);
    synchronize(device);  // the timed pass ends when the device has finished it
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  Latency l{percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), 0};
  for (double m : ms) l.mean += m / static_cast<double>(ms.size());
  return l;
}

}  // namespace slimbert::infer
