#include <ATen/ATen.h>

#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {

void add_forward(CLI::App& app) {
  struct Opts {
    std::string dir, inputs, out;
    double width = 1.0, depth = 1.0;
    RuntimeConfig runtime;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "forward",
      "run a checkpoint on input_ids/token_type_ids/attention_mask tensors and write every output");
  cmd->add_option("dir", opts->dir, "checkpoint directory")->required();
  cmd->add_option("--inputs", opts->inputs,
                  "safetensors with input_ids (and optional token_type_ids, attention_mask)")
      ->required();
  cmd->add_option("--out", opts->out,
                  "output safetensors: hidden_states.i, last_hidden_state, pooler_output, "
                  "mlm_logits, cls_logits")
      ->required();
  cmd->add_option("--width", opts->width, "sub-network width multiplier")->capture_default_str();
  cmd->add_option("--depth", opts->depth, "sub-network depth multiplier")->capture_default_str();
  add_runtime_options(cmd, &opts->runtime);
  cmd->callback([opts] {
    configure_runtime(opts->runtime);
    const BertConfig config = load_config_dir(opts->dir);
    const TensorMap weights = load_weights(opts->dir);
    check_config_matches_weights(config, weights, weights_path(opts->dir));
    const TensorMap inputs = load_safetensors(opts->inputs);
    auto input = [&](const char* name, bool required) -> at::Tensor {
      auto it = inputs.find(name);
      if (it == inputs.end()) {
        if (required) fail(opts->inputs, ": missing tensor '", name, "'");
        return {};
      }
      if (at::isFloatingType(it->second.scalar_type()) || it->second.dim() != 2)
        fail(opts->inputs, ": tensor '", name, "' must be a 2-d integer tensor (batch, seq), got ",
             at::toString(it->second.scalar_type()), " ", it->second.sizes());
      return it->second.to(at::kLong);
    };
    const Batch batch{input("input_ids", true), input("token_type_ids", false),
                      input("attention_mask", false)};
    const int64_t vocab = config.vocab_size;
    if (batch.input_ids.numel() && (batch.input_ids.min().item<int64_t>() < 0 ||
                                    batch.input_ids.max().item<int64_t>() >= vocab))
      fail(opts->inputs, ": input_ids out of range [0, ", vocab, ")");
    if (batch.input_ids.size(1) > config.max_position_embeddings)
      fail(opts->inputs, ": sequence length ", batch.input_ids.size(1),
           " exceeds max_position_embeddings ", config.max_position_embeddings);

    auto has = [&](const std::string& part) {
      for (const auto& [k, t] : weights)
        if (k.find(part) != std::string::npos) return true;
      return false;
    };
    const std::string source = weights_path(opts->dir);
    // Each model reads the one weights map, evaluates, on the compute device.
    auto ready = [&](auto model) {
      load_state(*model, weights, source);
      model->eval();
      model->to(compute_device());
      return model;
    };
    const BertModel bert = ready(BertModel(config, /*add_pooling_layer=*/has("pooler.")));
    at::NoGradGuard no_grad;
    const SubNet subnet{opts->width, opts->depth};
    const Encoded enc = bert->forward(batch, subnet);
    TensorMap out;
    for (size_t i = 0; i < enc.hidden_states.size(); ++i)
      out["hidden_states." + std::to_string(i)] = enc.hidden_states[i];
    out["last_hidden_state"] = enc.last();
    if (enc.pooled.defined()) out["pooler_output"] = enc.pooled;
    if (has("cls.predictions.")) {
      out["mlm_logits"] = ready(BertForMaskedLM(config))->logits(enc.last());
    }
    if (has("classifier.")) {
      out["cls_logits"] = ready(BertForSequenceClassification(config))->logits(enc);
    }
    save_safetensors(opts->out, out, DType::F32,
                     {{"format", "pt"}, {"producer", "slimbert forward"}});
    std::cerr << "wrote " << out.size() << " tensors to " << opts->out << "\n";
  });
}

}  // namespace slimbert::cli
