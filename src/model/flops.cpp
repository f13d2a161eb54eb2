#include "slimbert/model/flops.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "slimbert/core/error.h"
#include "slimbert/core/runtime.h"

namespace slimbert {

std::vector<ComponentCount> count_parameters(const TensorMap& weights) {
  const std::vector<std::string> order = {"embeddings", "attention",  "ffn",  "pooler",
                                          "mlm_head",   "classifier", "other"};
  std::map<std::string, int64_t> counts;
  for (const auto& [name, t] : weights) {
    if (name == "cls.predictions.decoder.weight" || name == "cls.predictions.decoder.bias")
      continue;
    std::string c = "other";
    if (name.find("embeddings.") != std::string::npos)
      c = "embeddings";
    else if (name.find(".attention.") != std::string::npos)
      c = "attention";
    else if (name.find(".intermediate.") != std::string::npos ||
             name.find(".output.") != std::string::npos)
      c = "ffn";
    else if (name.find("pooler.") != std::string::npos)
      c = "pooler";
    else if (name.rfind("cls.", 0) == 0)
      c = "mlm_head";
    else if (name.rfind("classifier.", 0) == 0)
      c = "classifier";
    counts[c] += t.numel();
  }
  std::vector<ComponentCount> out;
  for (const auto& c : order)
    if (counts.count(c)) out.push_back({c, counts[c]});
  return out;
}

double encoder_flops(const BertConfig& c, int64_t seq, const SubNet& subnet) {
  const double T = static_cast<double>(seq), H = static_cast<double>(c.hidden_size);
  double flops = 0;
  for (int64_t l : kept_layers(c.num_hidden_layers, subnet.depth)) {
    const LayerShape s = layer_shape(c, l, subnet.width);
    const double inner = static_cast<double>(s.heads * s.head_size);
    flops += 2 * T * H * inner * 3;  // Q, K, V
    flops += 2 * T * T * inner * 2;  // scores and context
    flops += 2 * T * inner * H;      // attention output
    flops += 2 * T * H * s.ffn * 2;  // FFN in and out
  }
  return flops;
}

double mlm_head_flops(const BertConfig& c, int64_t positions) {
  const double P = static_cast<double>(positions), H = static_cast<double>(c.hidden_size);
  return 2 * P * H * H + 2 * P * H * static_cast<double>(c.vocab_size);
}

namespace {

double percentile(std::vector<double> values, double p) {  // nearest rank
  std::sort(values.begin(), values.end());
  const size_t rank =
      static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace

Latency measure_latency(const BertModel& model, int64_t batch, int64_t seq, const SubNet& subnet,
                        int64_t iters, int64_t warmup) {
  const BertConfig& config = model->config();
  if (seq > config.max_position_embeddings)
    fail("sequence length ", seq, " exceeds max_position_embeddings ",
         config.max_position_embeddings);
  if (iters <= 0) fail("latency: iterations must be positive");
  // Its own generator: timing must not change the global random stream.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const c10::Device device = model->device();
  const Batch input = Batch{at::randint(std::min<int64_t>(1000, config.vocab_size - 1),
                                        config.vocab_size, {batch, seq}, gen, at::kLong),
                            at::zeros({batch, seq}, at::kLong), at::ones({batch, seq}, at::kLong)}
                          .to(device);
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < warmup; ++i) model->forward(input, subnet);
  synchronize(device);
  std::vector<double> ms;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model->forward(input, subnet);
    synchronize(device);  // the timed pass ends when the device has finished it
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  Latency l{percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), 0};
  for (double m : ms) l.mean += m / static_cast<double>(ms.size());
  return l;
}

}  // namespace slimbert
