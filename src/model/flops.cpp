#include "slimbert/model/flops.h"

#include <ATen/ATen.h>

#include <map>

#include "slimbert/core/error.h"

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

}  // namespace slimbert
