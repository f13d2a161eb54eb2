#include "slimbert/train/progress.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"

namespace slimbert {

namespace {
std::string& stored_run_config() {
  static std::string config;
  return config;
}
std::string& stored_stage() {
  static std::string stage;
  return stage;
}
}  // namespace

void set_progress_stage(const std::string& stage) {
  stored_stage() = stage;
}

void set_run_config(const std::string& json) {
  stored_run_config() = json;
}

const std::string& run_config() {
  return stored_run_config();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof(buf), "%lds", t);
  return buf;
}

namespace {

// " loss 2.31 lr 0.0001": the values of a report line.
std::string format_values(const std::map<std::string, double>& values) {
  std::string parts;
  char buf[96];
  for (const auto& [k, v] : values) {
    std::snprintf(buf, sizeof(buf), " %s %.4g", k.c_str(), v);
    parts += buf;
  }
  return parts;
}

}  // namespace

Progress::Progress(std::string what, int64_t total_steps, std::string metrics_path,
                   int64_t start_step)
    : what_(stored_stage().empty() ? std::move(what) : stored_stage() + " " + what),
      total_(total_steps),
      start_step_(start_step),
      metrics_path_(std::move(metrics_path)),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_(start_),
      last_step_(start_step) {
  if (!metrics_path_.empty()) truncate_metrics(metrics_path_, start_step);
}

void truncate_metrics(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  // Lines past `step` were written by a run killed after its last checkpoint: the resumed run
  // writes them again. A line cut short by the kill is not JSON and goes too.
  std::string kept;
  for (const std::string& line : split_lines(read_file(path), false)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

Progress::~Progress() {
  if (tty_) std::fputc('\n', stderr);
}

void Progress::write_jsonl(const std::string& line) {
  if (metrics_path_.empty()) return;
  std::FILE* f = std::fopen(metrics_path_.c_str(), "ab");
  if (!f) fail(metrics_path_, ": cannot append metrics: ", std::strerror(errno));
  const bool written = std::fwrite(line.data(), 1, line.size(), f) == line.size() &&
                       std::fputc('\n', f) != EOF && std::fflush(f) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !written)
    fail(metrics_path_, ": cannot append metrics: ", std::strerror(written ? errno : err));
}

void Progress::report(int64_t step, const std::map<std::string, double>& values, int64_t tokens,
                      double flops, double peak_flops) {
  const auto now = std::chrono::steady_clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = static_cast<double>(step - start_step_) / std::max(elapsed, 1e-9);
  const double eta = rate > 0 ? static_cast<double>(total_ - step) / rate : NAN;
  const double tok_s = since_last > 0 ? static_cast<double>(tokens) / since_last : 0;
  const double mfu = peak_flops > 0 && since_last > 0 ? flops / since_last / peak_flops : 0;
  last_ = now;
  last_step_ = step;

  nlohmann::json j = {{"step", step}, {"total", total_}, {"elapsed_s", elapsed}};
  for (const auto& [k, v] : values) j[k] = v;
  if (tokens) j["tokens_per_s"] = tok_s;
  if (mfu > 0) j["mfu"] = mfu;
  write_jsonl(json_text(j));

  std::string parts = format_values(values);
  char buf[96];
  if (tokens) {
    std::snprintf(buf, sizeof(buf), " | %.0f tok/s", tok_s);
    parts += buf;
  }
  if (mfu > 0) {
    std::snprintf(buf, sizeof(buf), " MFU %.0f%%", 100 * mfu);
    parts += buf;
  }
  if (tty_) {
    const int width = 24;
    const int filled = static_cast<int>(width * static_cast<double>(step) /
                                        static_cast<double>(std::max<int64_t>(1, total_)));
    std::string bar = std::string(static_cast<size_t>(filled), '#') +
                      std::string(static_cast<size_t>(width - filled), '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld%s | ETA %s   ", what_.c_str(), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), parts.c_str(),
                 format_duration(eta).c_str());
  } else {
    std::fprintf(stderr, "%s step %lld/%lld%s | ETA %s\n", what_.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), parts.c_str(),
                 format_duration(eta).c_str());
  }
  std::fflush(stderr);
}

void Progress::event(int64_t step, const std::string& kind,
                     const std::map<std::string, double>& values, const std::string& note) {
  nlohmann::json j = {{"step", step}, {"event", kind}};
  for (const auto& [k, v] : values) j[k] = v;
  if (!note.empty()) j["note"] = note;
  write_jsonl(json_text(j));
  const std::string parts = format_values(values);
  std::fprintf(stderr, "%s%s step %lld: %s%s%s%s\n", tty_ ? "\n" : "", what_.c_str(),
               static_cast<long long>(step), kind.c_str(), parts.c_str(), note.empty() ? "" : " ",
               note.c_str());
}

void Progress::finish() {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "%s%s done in %s\n", tty_ ? "\n" : "", what_.c_str(),
               format_duration(elapsed).c_str());
  tty_ = false;
}

}  // namespace slimbert
