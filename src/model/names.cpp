#include "slimbert/model/names.h"

namespace slimbert::hf {

std::string path(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) {
    if (part.empty()) continue;
    if (!out.empty()) out += '.';
    out += part;
  }
  return out;
}

std::string layer(int64_t l) {
  return std::string(kLayers) + "." + std::to_string(l);
}

std::string encoder_layer(int64_t l, std::string_view module) {
  return path({kEncoder, layer(l), module});
}

std::string encoder(std::string_view module) {
  return path({kEncoder, module});
}

std::string LayerParameter::name() const {
  return prefix + path({hf::layer(layer), rest});
}

std::optional<LayerParameter> parse_layer_parameter(std::string_view name) {
  const std::string marker = std::string(kLayers) + ".";
  for (std::string_view prefix : {std::string_view(), std::string_view("bert.")}) {
    if (name.substr(0, prefix.size()) != prefix) continue;
    std::string_view tail = name.substr(prefix.size());
    if (tail.substr(0, marker.size()) != marker) continue;
    tail.remove_prefix(marker.size());
    const size_t dot = tail.find('.');
    const std::string_view digits = tail.substr(0, dot);
    if (dot == std::string_view::npos || digits.empty() || digits.size() > 6 ||
        digits.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    return LayerParameter{std::string(prefix), std::stoll(std::string(digits)),
                          std::string(tail.substr(dot + 1))};
  }
  return std::nullopt;
}

}  // namespace slimbert::hf
