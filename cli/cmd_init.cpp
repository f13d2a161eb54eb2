#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {

void add_init(CLI::App& app) {
  struct Opts {
    std::string dir, preset = "mini", vocab = "data/vocab.txt", like, model_type;
    int64_t labels = 0;
    uint64_t seed = 0;
    int64_t max_positions = 512;
    RuntimeConfig runtime;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("init", "write a randomly initialised model directory (HF format)");
  cmd->add_option("dir", opts->dir, "output checkpoint directory")->required();
  cmd->add_option("--preset", opts->preset,
                  "shape: tiny, mini (L4/H256/A4/I1024), small, medium, base")
      ->check(CLI::IsMember(BertConfig::preset_names()))
      ->capture_default_str();
  cmd->add_option("--like", opts->like,
                  "take the shape from this checkpoint's config.json instead of a preset "
                  "(e.g. a random-init baseline for a compressed student)");
  cmd->add_option("--tokenizer,--vocab", opts->vocab,
                  "vocab.txt (bert-base-uncased: scripts/make-vocab.sh) or an HF tokenizer.json")
      ->capture_default_str();
  cmd->add_option("--model-type", opts->model_type,
                  "bert, roberta or xlm-roberta (default: bert, or --like's)")
      ->check(CLI::IsMember(model_type_names()));
  cmd->add_option("--labels", opts->labels,
                  "also add a pooler and an N-label classifier head (1 = regression)");
  cmd->add_option("--max-positions", opts->max_positions, "max_position_embeddings")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_option("--seed", opts->seed, "initialisation seed")->capture_default_str();
  add_runtime_options(cmd, &opts->runtime);
  cmd->callback([opts] {
    configure_runtime(opts->runtime);
    const Tokenizer tokenizer = Tokenizer::from_file(opts->vocab);
    BertConfig config = BertConfig::preset(opts->preset);
    if (!opts->like.empty()) {
      config = load_config_dir(opts->like);
      config.id2label.clear();
      config.problem_type.clear();
      if (!opts->model_type.empty() && opts->model_type != config.model_type)
        fail("--model-type ", opts->model_type, " differs from ", opts->like,
             "/config.json's model_type ", config.model_type);
    } else {
      config.max_position_embeddings = opts->max_positions;
      apply_family_defaults(config, family_of(opts->model_type.empty() ? "bert" : opts->model_type),
                            tokenizer.pad_id());
    }
    if (config.vocab_size != tokenizer.vocab().size() && !opts->like.empty())
      fail(opts->vocab, ": ", tokenizer.vocab().size(), " tokens, but ", opts->like,
           "/config.json has vocab_size ", config.vocab_size);
    config.vocab_size = tokenizer.vocab().size();
    std::shared_ptr<torch::nn::Module> model;
    if (opts->labels > 0) {
      config.set_num_labels(opts->labels);
      if (opts->labels == 1) config.problem_type = "regression";
      config.architectures = {"BertForMaskedLM", "BertForSequenceClassification"};
      // One set of weights for both heads, as HF stores them side by side.
      auto mlm = BertForMaskedLM(config);
      auto clf = BertForSequenceClassification(config);
      auto both = std::make_shared<torch::nn::Module>("BertWithHeads");
      both->register_module("bert", clf->bert);
      both->register_module("cls", mlm->named_children()["cls"]);
      both->register_module("classifier", clf->classifier);
      // The MLM head is tied to clf's word embeddings in a real model; for saving, names suffice.
      model = both;
    } else {
      config.architectures = {"BertForMaskedLM"};
      model = BertForMaskedLM(config).ptr();
    }
    init_weights(*model, config, opts->seed);
    save_checkpoint(opts->dir, config, *model, tokenizer);
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    std::cout << "wrote " << opts->dir << ": "
              << (opts->like.empty() ? "preset " + opts->preset : "shape of " + opts->like) << ", "
              << format_count(n) << " parameters\n";
  });
}

}  // namespace slimbert::cli
