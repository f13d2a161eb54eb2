// OUT/report.html of `slimbert compress`: one page with the chosen model and how to serve it, the
// exported Pareto-optimal models, three Pareto views (dev score against latency, parameters and
// size in MB; the teacher as a reference line), the grid tables, the stages and the command.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace slimbert {

struct ReportInput {
  std::string task, method, command;
  std::string teacher_dir, model_dir;
  nlohmann::json grid;     // grid.json of dynabert grid (series "teacher" included)
  nlohmann::json exports;  // [{width, depth, dir, dev, latency_ms, size_mb, chosen}]
  double budget_ms = 0;
  int64_t max_length = 128;
  int64_t hidden_size = 0, head_size = 0;                      // the model's, for the int8 sizes
  std::vector<std::pair<std::string, nlohmann::json>> stages;  // name, ledger result
};

// The page. Opened with #check, a script in it lists what overlaps or leaves a plot frame in
// <pre id="layout-check"> ("ok" when nothing does), for headless browser checks.
std::string compress_report_html(const ReportInput& input);

}  // namespace slimbert
