// Shared pieces of the command-line front end: options every command takes, input records,
// atomic outputs, batches.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "slimbert/core/error.h"
#include "slimbert/core/runtime.h"
#include "slimbert/infer/model.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"
#include "slimbert/text/tokenizer.h"
#include "slimbert/train/finetune.h"
#include "slimbert/train/pretrain.h"

namespace slimbert::cli {

// --threads, --torch-threads and --device, applied by configure_runtime() when the command runs.
void add_runtime_options(CLI::App* cmd, RuntimeConfig* config);

// configure_runtime for a training command, which also joins the data-parallel group that
// torchrun's variables describe (`slimbert launch` sets them). On ranks other than 0, standard
// output is silent: rank 0 reports.
void configure_training(const RuntimeConfig& config);

// --int8 (the encoder's linear maps in int8, oneDNN dynamic quantization) and --gemm (where fp32
// products run: auto, the faster of openblas and onednn measured at load, or one of them).
struct EngineOptions {
  bool int8 = false;
  std::string gemm = "auto";
};
void add_engine_options(CLI::App* cmd, EngineOptions* options);
// Applies the runtime options and loads DIR for inference (infer::configure_engine: --gemm auto
// is measured here). int8 and oneDNN pack the weights of `widths` and give the threads to
// libtorch's pool, which runs their products.
std::shared_ptr<const infer::InferenceModel> load_inference_model(
    const std::string& dir, RuntimeConfig runtime, const EngineOptions& engine,
    const std::vector<double>& widths = {1.0});

// "validation loss L, MLM accuracy A", or why there is none (shards without a validation split).
std::string describe_validation(double loss, double accuracy);

// One input: a line of plain text, or a JSONL record {"text", "text_pair"?, "id"?, "max_length"?}.
struct Record {
  size_t line = 0;  // 1-based line number in the input
  std::string text;
  std::optional<std::string> text_pair;
  std::optional<int64_t> max_length;
  nlohmann::json id;  // passed through to the output when present
};

enum class InputFormat { kAuto, kJsonl, kText };
struct InputOptions {
  std::string path = "-";  // "-" = standard input
  std::string format = "auto";
  bool skip_empty = false;
};
void add_input_options(CLI::App* cmd, InputOptions* options);
// Reads records a few at a time, so that commands can answer each batch before the rest of a
// pipe arrives; errors name the input and line. Empty lines are an error unless skipped. Text
// lines with invalid UTF-8 are read with each bad sequence replaced (U+FFFD, as decoding with
// errors="replace" gives) and counted; the count is reported once, at the end.
class RecordReader {
 public:
  explicit RecordReader(const InputOptions& options);
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;
  ~RecordReader();
  // Up to `n` more records; empty at the end of the input (an input with none is an error).
  std::vector<Record> next(size_t n);
  const std::string& source() const { return source_; }

 private:
  bool read_line(std::string& line, bool wait);

  InputOptions options_;
  std::string source_, format_;
  int fd_ = -1;
  bool owned_ = false, eof_ = false;
  std::string buffer_;  // read, not yet split into lines
  size_t scanned_ = 0;  // buffer_[0, scanned_) holds no '\n'
  size_t line_no_ = 0, records_ = 0, invalid_utf8_ = 0;
};
// Every record at once.
std::vector<Record> read_records(const InputOptions& options);

// Output to a file (written atomically when the command succeeds) or to standard output.
class Output {
 public:
  explicit Output(std::string path) : path_(std::move(path)) {}
  std::ostream& stream() { return buffer_; }
  void flush();   // standard output: writes what is buffered now (a file waits for commit)
  void commit();  // writes the file, or flushes to stdout

 private:
  std::string path_;
  std::ostringstream buffer_;
};

// Encodes records; sequences over `max_length` are truncated with a warning, or rejected
// when `no_truncate`.
std::vector<Encoding> encode_records(const Tokenizer& tokenizer, const std::vector<Record>& records,
                                     int64_t max_length, bool no_truncate,
                                     const std::string& source);

std::string format_count(int64_t n);  // 4,385,280

// The MLM loop's options (steps, batch, lr, schedule, logging, checkpoints, resume), shared by
// `pretrain` and `wid`.
void add_mlm_loop_options(CLI::App* cmd, PretrainOptions* options);
// The task loop's options (--task --data --out, epochs, batch, lr, schedule, evaluation,
// checkpoints, resume), shared by `finetune` and the DynaBERT stages.
// With `lrs`, --lr takes a comma-separated list (each tried, the best on dev kept) into it.
void add_task_loop_options(CLI::App* cmd, FinetuneOptions* options, std::string* lrs = nullptr);

// A comma-separated list of numbers in (0, 1] (width and depth multipliers, learning rates);
// errors name `flag` and the item.
std::vector<double> parse_list(const std::string& text, const char* flag);

// The command line as typed (arguments shell-quoted where needed), recorded by main().
void set_command_line(int argc, char** argv);
const std::string& command_line();

// A count of at least 1, checked with a message people read ("--batch: 0 is not a count of at
// least 1"); CLI11's PositiveNumber prints double's maximum in full.
CLI::Validator positive_count();

// An option whose absence means "the library's default": `target` stays empty unless given.
template <typename T>
CLI::Option* optional_option(CLI::App* cmd, const std::string& name, std::optional<T>& target,
                             const std::string& help, const CLI::Validator& check) {
  return cmd
      ->add_option_function<T>(
          name, [&target](const T& v) { target = v; }, help)
      ->check(check);
}

// Training commands record their configuration (command line, every option, threads) in their
// run directory's config.json; --verbose also prints it.
void add_verbose_flag(CLI::App* cmd, bool* verbose);
void record_run_config(const CLI::App* cmd, bool verbose);

}  // namespace slimbert::cli
