// slimbert: one program for every stage; errors become messages and exit codes only here.
#include <c10/util/Exception.h>

#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"slimbert: make BERT-family encoders small and fast (WID, DynaBERT) on libtorch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "slimbert 0.1.0");
  slimbert::cli::add_info(app);
  slimbert::cli::add_init(app);
  slimbert::cli::add_tokenize(app);
  slimbert::cli::add_embed_and_predict(app);
  slimbert::cli::add_bench(app);
  slimbert::cli::add_forward(app);
  slimbert::cli::add_data(app);
  slimbert::cli::add_pretrain(app);
  slimbert::cli::add_eval_mlm(app);
  slimbert::cli::add_finetune(app);
  slimbert::cli::add_eval(app);
  slimbert::cli::add_wid(app);
  slimbert::cli::add_dynabert(app);
  slimbert::cli::add_profile(app);
  slimbert::cli::add_serve(app);
  slimbert::cli::add_launch(app);
  slimbert::cli::add_compress(app);
  slimbert::cli::add_export_onnx(app);
  slimbert::cli::set_command_line(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const slimbert::Error& e) {
    std::cerr << "slimbert: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "slimbert: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "slimbert: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
