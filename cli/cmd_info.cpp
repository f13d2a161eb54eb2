#include <ATen/ATen.h>

#include <filesystem>
#include <iomanip>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/model/history.h"

namespace slimbert::cli {

void add_info(CLI::App& app) {
  struct Opts {
    std::string dir;
    int64_t seq = 128;
    bool json = false;
    RuntimeConfig runtime;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("info", "show a checkpoint's config, parameters per component and FLOPs");
  cmd->add_option("dir", opts->dir, "checkpoint directory")->required();
  cmd->add_option("--seq", opts->seq, "sequence length for the FLOPs figure")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_flag("--json", opts->json, "print one JSON object");
  add_runtime_options(cmd, &opts->runtime);
  cmd->callback([opts] {
    configure_runtime(opts->runtime);
    const BertConfig config = load_config_dir(opts->dir);
    const TensorMap weights = load_weights(opts->dir);
    check_config_matches_weights(config, weights, weights_path(opts->dir));
    const auto counts = count_parameters(weights);
    int64_t total = 0;
    for (const auto& c : counts) total += c.parameters;
    const double flops = encoder_flops(config, opts->seq);
    if (opts->json) {
      nlohmann::json j;
      j["config"] = config.to_json();
      j["parameters"] = nlohmann::json::object();
      for (const auto& c : counts) j["parameters"][c.component] = c.parameters;
      j["parameters"]["total"] = total;
      j["seq"] = opts->seq;
      j["encoder_gflops_per_sequence"] = flops / 1e9;
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << opts->dir << "\n  family: " << config.model_type;
    if (!config.architectures.empty())
      std::cout << " (" << family_architecture(config.architectures.front(), family_of(config))
                << ")";
    std::cout << "\n  shape: L" << config.num_hidden_layers << " H" << config.hidden_size << " A"
              << config.num_attention_heads << " I" << config.intermediate_size << " (head size "
              << config.attention_head_size() << ", vocab " << config.vocab_size
              << ", max positions " << config.max_position_embeddings << ", act "
              << config.hidden_act << ")\n";
    if (!config.pruned_heads.empty()) {
      std::cout << "  heads per layer:";
      for (int64_t l = 0; l < config.num_hidden_layers; ++l)
        std::cout << " " << config.heads_in_layer(l);
      std::cout << "\n";
    }
    if (!config.id2label.empty() || !config.problem_type.empty()) {
      std::cout << "  labels:";
      for (int64_t i = 0; i < config.num_labels(); ++i) std::cout << " " << config.label_name(i);
      if (!config.problem_type.empty()) std::cout << " (" << config.problem_type << ")";
      std::cout << "\n";
    }
    const std::vector<std::string> steps = history(config);
    std::cout << "  made by slimbert: ";
    if (steps.empty()) std::cout << "nothing recorded (not width-adaptive)";
    for (size_t i = 0; i < steps.size(); ++i) std::cout << (i ? ", " : "") << steps[i];
    if (!steps.empty())
      std::cout << (width_adaptive(config) ? " (width-adaptive)" : " (not width-adaptive)");
    std::cout << "\n";
    std::cout << "  parameters:\n";
    for (const auto& c : counts)
      std::cout << "    " << std::left << std::setw(12) << c.component << std::right
                << std::setw(14) << format_count(c.parameters) << "\n";
    std::cout << "    " << std::left << std::setw(12) << "total" << std::right << std::setw(14)
              << format_count(total) << "\n";
    std::cout << "  encoder FLOPs per sequence of " << opts->seq << " tokens: " << std::fixed
              << std::setprecision(3) << flops / 1e9 << " GFLOP\n";
  });
}

}  // namespace slimbert::cli
