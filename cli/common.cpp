#include "common.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"

namespace slimbert::cli {

void add_runtime_options(CLI::App* cmd, RuntimeConfig* config) {
  cmd->add_option(
         "--threads", config->threads,
         "CPU threads (0 = OMP_NUM_THREADS if set, else all cores); by default they run OpenBLAS "
         "matrix products")
      ->capture_default_str();
  cmd->add_flag("--torch-threads", config->torch_intra,
                "give the threads to libtorch's intra-op pool instead of OpenBLAS");
  cmd->add_option("--device", config->device,
                  "where models run: cpu, cuda or cuda:N (a CUDA build of libtorch)")
      ->capture_default_str();
}

void add_engine_options(CLI::App* cmd, EngineOptions* options) {
  cmd->add_flag("--int8", options->int8,
                "run the encoder's linear maps in int8 (dynamic quantization, oneDNN; CPU)");
  cmd->add_option("--gemm", options->gemm,
                  "where fp32 matrix products run: openblas, or onednn (weights packed at load; "
                  "CPU)")
      ->check(CLI::IsMember({"openblas", "onednn"}))
      ->capture_default_str();
}

void configure_training(const RuntimeConfig& config) {
  configure_runtime(config);
  const DistInfo info = dist_info_from_environment();
  // The rendezvous waits this long for every rank, and a collective this long for a silent one;
  // a rank that dies is noticed at once.
  long timeout = 1800;
  if (const char* t = std::getenv("SLIMBERT_DIST_TIMEOUT"); t && *t) {
    char* end = nullptr;
    timeout = std::strtol(t, &end, 10);
    if (*end || timeout <= 0)
      fail("SLIMBERT_DIST_TIMEOUT=", t, ": expected a positive number of seconds");
  }
  init_distributed(info, std::chrono::seconds(timeout));
  if (info.rank > 0) std::cout.setstate(std::ios::failbit);
}

std::shared_ptr<const infer::InferenceModel> load_inference_model(
    const std::string& dir, RuntimeConfig runtime, const EngineOptions& engine,
    const std::vector<double>& widths) {
  const infer::Gemm gemm = infer::parse_gemm(engine.gemm);
  if (engine.int8 || gemm == infer::Gemm::kOnednn) runtime.torch_intra = true;
  configure_runtime(runtime);
  return infer::InferenceModel::load(dir, infer::ModelOptions{engine.int8, widths, gemm});
}

std::string describe_validation(double loss, double accuracy) {
  if (std::isnan(loss)) return "no validation loss (the shards hold no validation sequences)";
  std::ostringstream out;
  out << "validation loss " << loss << ", MLM accuracy " << accuracy;
  return out.str();
}

void add_input_options(CLI::App* cmd, InputOptions* options) {
  cmd->add_option("--input,-i", options->path, "input file, '-' for standard input")
      ->capture_default_str();
  cmd->add_option("--format", options->format, "input format: auto, jsonl or text")
      ->check(CLI::IsMember({"auto", "jsonl", "text"}))
      ->capture_default_str();
  cmd->add_flag("--skip-empty", options->skip_empty, "skip empty lines instead of failing");
}

std::vector<Record> read_records(const InputOptions& options) {
  const std::string source = options.path == "-" ? "<stdin>" : options.path;
  std::string data;
  if (options.path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    data = ss.str();
  } else {
    data = read_file(options.path);
  }
  std::vector<Record> records;
  std::string format = options.format;
  size_t line_no = 0;
  for (const std::string& line : split_lines(data, /*strip_cr=*/true)) {
    ++line_no;
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (options.skip_empty) continue;
      fail(source, ":", line_no, ": empty line (use --skip-empty to skip empty lines)");
    }
    if (format == "auto") format = line[line.find_first_not_of(" \t")] == '{' ? "jsonl" : "text";
    Record r;
    r.line = line_no;
    if (format == "text") {
      r.text = line;
    } else {
      const nlohmann::json j = parse_json(line, cat(source, ":", line_no));
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        fail(source, ":", line_no, ": expected a JSON object with a string field \"text\"");
      r.text = j["text"].get<std::string>();
      if (j.contains("text_pair") && !j["text_pair"].is_null()) {
        if (!j["text_pair"].is_string())
          fail(source, ":", line_no, ": \"text_pair\" must be a string");
        r.text_pair = j["text_pair"].get<std::string>();
      }
      const JsonFields fields(j, cat(source, ":", line_no));
      if (fields.has("max_length"))
        r.max_length = fields.integer("max_length", 2, int64_t{1} << 20);
      if (j.contains("id")) r.id = j["id"];
    }
    records.push_back(std::move(r));
  }
  if (records.empty()) fail(source, ": no input records");
  return records;
}

void Output::commit() {
  if (path_.empty() || path_ == "-") {
    std::cout << buffer_.str() << std::flush;
  } else {
    write_file_atomic(path_, buffer_.str());
  }
}

int64_t max_input_length(const BertConfig& config, const Tokenizer& tokenizer, int64_t user_max) {
  int64_t m = std::min(config.max_position_embeddings, tokenizer.options().model_max_length);
  if (user_max > 0) m = std::min(m, user_max);
  return m;
}

std::vector<Encoding> encode_records(const Tokenizer& tokenizer, const std::vector<Record>& records,
                                     int64_t max_length, bool no_truncate,
                                     const std::string& source) {
  std::vector<Encoding> out;
  out.reserve(records.size());
  for (const auto& r : records) {
    Encoding full =
        tokenizer.encode(r.text, r.text_pair, EncodeOptions{std::nullopt, Truncation::kNone});
    const int64_t limit = r.max_length ? std::min(*r.max_length, max_length) : max_length;
    const int64_t n = static_cast<int64_t>(full.input_ids.size());
    if (n > limit) {
      if (no_truncate)
        fail(source, ":", r.line, ": input has ", n, " tokens, more than the limit of ", limit,
             " (max_position_embeddings / --max-length); drop --no-truncate to truncate");
      if (!r.max_length || *r.max_length > max_length)
        std::cerr << "warning: " << source << ":" << r.line << ": " << n << " tokens truncated to "
                  << limit << "\n";
      out.push_back(
          tokenizer.encode(r.text, r.text_pair, EncodeOptions{limit, Truncation::kLongestFirst}));
    } else {
      out.push_back(std::move(full));
    }
  }
  return out;
}

std::string format_count(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return (n < 0 ? "-" : "") + s;
}

}  // namespace slimbert::cli
