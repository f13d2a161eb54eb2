#include "slimbert/model/history.h"

#include <algorithm>

namespace slimbert {

namespace {
constexpr const char* kKey = "slimbert_history";
}

void add_history(BertConfig& config, const std::string& step) {
  nlohmann::json& h = config.extra[kKey];
  if (!h.is_array()) h = nlohmann::json::array();
  h.push_back(step);
}

std::vector<std::string> history(const BertConfig& config) {
  std::vector<std::string> out;
  if (!config.extra.contains(kKey) || !config.extra[kKey].is_array()) return out;
  for (const auto& step : config.extra[kKey])
    if (step.is_string()) out.push_back(step.get<std::string>());
  return out;
}

bool width_adaptive(const BertConfig& config) {
  const std::vector<std::string> h = history(config);
  return std::find(h.begin(), h.end(), "rewired") != h.end();
}

}  // namespace slimbert
