#include "common.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "slimbert/core/dist.h"
#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/history.h"
#include "slimbert/text/unicode.h"
#include "slimbert/train/progress.h"

namespace slimbert::cli {

void add_runtime_options(CLI::App* cmd, RuntimeConfig* config) {
  cmd->add_option(
         "--threads", config->threads,
         "CPU threads (0 = OMP_NUM_THREADS if set, else all cores); by default they run OpenBLAS "
         "matrix products")
      ->check(CLI::Range(0, 1 << 16))
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
  cmd->add_option(
         "--gemm", options->gemm,
         "where fp32 matrix products run: openblas, onednn (weights packed at load per "
         "width; CPU), or auto: the faster of the two, timed at load on the model's shapes")
      ->check(CLI::IsMember({"auto", "openblas", "onednn"}))
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
  return infer::load_configured(dir, {engine.int8, widths, infer::parse_gemm(engine.gemm)},
                                runtime);
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

RecordReader::RecordReader(const InputOptions& options)
    : options_(options),
      source_(options.path == "-" ? "<stdin>" : options.path),
      format_(options.format) {
  if (options.path == "-") {
    fd_ = 0;
  } else {
    // Named pipes and devices are inputs too; only a directory is not.
    if (!std::filesystem::exists(options.path)) fail(options.path, ": file not found");
    if (std::filesystem::is_directory(options.path))
      fail(options.path, ": is a directory, expected an input file");
    fd_ = ::open(options.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(options.path, ": cannot be read: ", std::strerror(errno));
    owned_ = true;
  }
}

RecordReader::~RecordReader() {
  if (owned_) ::close(fd_);
  if (invalid_utf8_ > 0)
    std::cerr << "slimbert: warning: " << source_ << ": " << invalid_utf8_
              << (invalid_utf8_ == 1 ? " line had" : " lines had")
              << " invalid UTF-8, each bad sequence read as U+FFFD (is the file Latin-1?)\n";
}

// The next line (without '\n'); false at the end of the input. With `wait` false it returns
// false instead of blocking when no complete line has arrived yet.
bool RecordReader::read_line(std::string& line, bool wait) {
  while (true) {
    const size_t nl = buffer_.find('\n', scanned_);
    if (nl != std::string::npos) {
      line.assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      scanned_ = 0;
      return true;
    }
    scanned_ = buffer_.size();
    if (eof_) {
      if (buffer_.empty()) return false;
      line.swap(buffer_);
      buffer_.clear();
      scanned_ = 0;
      return true;
    }
    if (!wait) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) return false;
    }
    char chunk[65536];
    const ssize_t got = ::read(fd_, chunk, sizeof chunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(source_, ": read error after line ", line_no_, ": ", std::strerror(errno));
    }
    if (got == 0) eof_ = true;
    buffer_.append(chunk, static_cast<size_t>(got));
    // A line past 64 MiB is not text input: stop before memory does.
    if (buffer_.size() > (size_t{64} << 20))
      fail(source_, ":", line_no_ + 1, ": line longer than 64 MiB");
  }
}

std::vector<Record> RecordReader::next(size_t n) {
  std::vector<Record> records;
  std::string line;
  // Blocks for the first record only: what has arrived is answered before waiting for more.
  while (records.size() < n && read_line(line, records.empty())) {
    ++line_no_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (options_.skip_empty) continue;
      fail(source_, ":", line_no_, ": empty line (use --skip-empty to skip empty lines)");
    }
    if (format_ == "auto") format_ = line[line.find_first_not_of(" \t")] == '{' ? "jsonl" : "text";
    Record r;
    r.line = line_no_;
    if (format_ == "text") {
      if (!unicode::is_valid_utf8(line)) {
        ++invalid_utf8_;
        line = unicode::encode_utf8(unicode::decode_utf8(line));
      }
      r.text = line;
    } else {
      const nlohmann::json j = parse_json(line, cat(source_, ":", line_no_));
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        fail(source_, ":", line_no_, ": expected a JSON object with a string field \"text\"");
      r.text = j["text"].get<std::string>();
      if (j.contains("text_pair") && !j["text_pair"].is_null()) {
        if (!j["text_pair"].is_string())
          fail(source_, ":", line_no_, ": \"text_pair\" must be a string");
        r.text_pair = j["text_pair"].get<std::string>();
      }
      const JsonFields fields(j, cat(source_, ":", line_no_));
      if (fields.has("max_length"))
        r.max_length = fields.integer("max_length", 2, int64_t{1} << 20);
      if (j.contains("id")) r.id = j["id"];
    }
    records.push_back(std::move(r));
  }
  records_ += records.size();
  if (records.empty() && records_ == 0) fail(source_, ": no input records");
  return records;
}

std::vector<Record> read_records(const InputOptions& options) {
  RecordReader reader(options);
  std::vector<Record> all;
  for (auto chunk = reader.next(4096); !chunk.empty(); chunk = reader.next(4096))
    for (auto& r : chunk) all.push_back(std::move(r));
  return all;
}

void Output::flush() {
  if (!path_.empty() && path_ != "-") return;
  std::cout << buffer_.str() << std::flush;
  buffer_.str("");
}

void Output::commit() {
  if (path_.empty() || path_ == "-") {
    std::cout << buffer_.str() << std::flush;
  } else {
    write_file_atomic(path_, buffer_.str());
  }
}

std::vector<Encoding> encode_records(const Tokenizer& tokenizer, const std::vector<Record>& records,
                                     int64_t max_length, bool no_truncate,
                                     const std::string& source) {
  std::vector<Encoding> out;
  out.reserve(records.size());
  for (const auto& r : records) {
    const int64_t limit = r.max_length ? std::min(*r.max_length, max_length) : max_length;
    infer::FittedEncoding e =
        infer::encode_within(tokenizer, r.text, r.text_pair, limit, !no_truncate);
    if (e.tokens > limit) {
      if (no_truncate)
        fail(source, ":", r.line, ": input has ", e.tokens, " tokens, more than the limit of ",
             limit, " (max_position_embeddings / --max-length); drop --no-truncate to truncate");
      if (!r.max_length || *r.max_length > max_length)
        std::cerr << "warning: " << source << ":" << r.line << ": " << e.tokens
                  << " tokens truncated to " << limit << "\n";
    }
    out.push_back(std::move(e.encoding));
  }
  return out;
}

std::string format_count(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return (n < 0 ? "-" : "") + s;
}

std::vector<double> parse_list(const std::string& text, const char* flag) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail(flag, ": '", item, "' is not a number (expected a list like 1,0.75,0.5)");
    }
    if (!(out.back() > 0 && out.back() <= 1)) fail(flag, ": ", out.back(), " is not in (0, 1]");
  }
  if (out.empty()) fail(flag, ": empty list");
  return out;
}

namespace {
std::string& stored_command_line() {
  static std::string line;
  return line;
}
}  // namespace

void set_command_line(int argc, char** argv) {
  std::string line = "slimbert";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL"
                                         "MNOPQRSTUVWXYZ0123456789-_=+.,/:@%") == std::string::npos;
    if (plain) {
      line += " " + a;
      continue;
    }
    line += " '";
    for (char ch : a) line += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    line += "'";
  }
  stored_command_line() = line;
}

const std::string& command_line() {
  return stored_command_line();
}

CLI::Validator positive_count() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const long long v = std::stoll(text, &used);
          if (used == text.size() && v >= 1) return "";
        } catch (const std::exception&) {
        }
        return text + " is not a count of at least 1";
      },
      "COUNT >= 1");
}

void add_verbose_flag(CLI::App* cmd, bool* verbose) {
  cmd->add_flag("--verbose", *verbose,
                "also print the whole configuration (always written to OUT/config.json)");
}

void record_run_config(const CLI::App* cmd, bool verbose) {
  const std::string text = cmd->config_to_str(true, false);
  nlohmann::json options = nlohmann::json::object();
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    options[line.substr(0, eq)] = value;
  }
  set_run_config(nlohmann::json{{"command", command_line()},
                                {"subcommand", cmd->get_name()},
                                {"options", options},
                                {"threads", describe_threads()}}
                     .dump(2) +
                 "\n");
  if (verbose)
    std::cerr << cmd->get_name() << " config:\n"
              << text << "threads: " << describe_threads() << "\n";
}

}  // namespace slimbert::cli
