// Each subcommand registers itself on the application; its callback does the work.
#pragma once

#include <CLI/CLI.hpp>

namespace slimbert::cli {

void add_info(CLI::App& app);
void add_init(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_embed_and_predict(CLI::App& app);
void add_bench(CLI::App& app);
void add_forward(CLI::App& app);
void add_data(CLI::App& app);
void add_pretrain(CLI::App& app);
void add_eval_mlm(CLI::App& app);
void add_finetune(CLI::App& app);
void add_eval(CLI::App& app);
void add_wid(CLI::App& app);
void add_dynabert(CLI::App& app);
void add_serve(CLI::App& app);
void add_profile(CLI::App& app);
void add_launch(CLI::App& app);
void add_compress(CLI::App& app);
void add_export_onnx(CLI::App& app);

}  // namespace slimbert::cli
