// Progress of long jobs: a bar with ETA on a terminal, otherwise one line per logging step,
// and always a JSONL metrics file.
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

namespace slimbert {

// The configuration of the running command (its command line, every option, the threads),
// given by the CLI; every training run writes it to its run directory as config.json instead of
// printing it. Empty by default: library callers write none.
void set_run_config(const std::string& json);
const std::string& run_config();

// A job of several runs (compress) names the one running ("compress [3/8]"): every progress line
// starts with it, so the bar and its ETA say where the job is. Empty: none.
void set_progress_stage(const std::string& stage);

// Keeps the lines of the JSONL metrics file `path` whose step is at most `step` (atomically).
void truncate_metrics(const std::string& path, int64_t step);

class Progress {
 public:
  // `metrics_path` may be empty (no JSONL). An existing file keeps only its lines up to
  // `start_step` (a resumed run; none for a fresh one), then gets appended to; a failed append
  // is an error naming the file.
  Progress(std::string what, int64_t total_steps, std::string metrics_path, int64_t start_step = 0);
  ~Progress();
  // Reports step `step` (1-based, of total): values such as loss parts and lr; `tokens` processed
  // since the last report, `flops` done since the last report (for MFU against `peak_flops`).
  void report(int64_t step, const std::map<std::string, double>& values, int64_t tokens = 0,
              double flops = 0, double peak_flops = 0);
  // An event (evaluation, checkpoint) on its own line and in the JSONL file.
  void event(int64_t step, const std::string& kind, const std::map<std::string, double>& values,
             const std::string& note = "");
  void finish();

 private:
  void write_jsonl(const std::string& line);
  std::string what_;
  int64_t total_, start_step_;
  std::string metrics_path_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
  int64_t last_step_;
};

std::string format_duration(double seconds);  // 1h02m, 4m05s, 12s

}  // namespace slimbert
