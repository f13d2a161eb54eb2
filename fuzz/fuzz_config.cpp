// config.json: parse, validate, and everything `info` derives from a config (per-layer heads,
// labels, the JSON written back), which must round-trip.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "slimbert/core/json.h"
#include "slimbert/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  fuzz::expect_clean([&] {
    const nlohmann::json j =
        parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    const BertConfig c = BertConfig::from_json(j, "config.json");
    int64_t total = c.attention_head_size();
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) total += c.heads_in_layer(l);
    for (int64_t i = 0; i < c.num_labels(); ++i)
      total += static_cast<int64_t>(c.label_name(i).size());
    (void)c.is_regression();
    const std::string text = json_text(c.to_json());
    const BertConfig again = BertConfig::from_json(parse_json(text, "again"), "again");
    if (json_text(again.to_json()) != text || total < 0) {
      std::fprintf(stderr, "finding: config does not round-trip\n");
      std::abort();
    }
  });
  return 0;
}
