// The accuracy x latency grid of a DynaBERT model and its report.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/data/metrics.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/run.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/flops.h"
#include "slimbert/report/plot.h"

namespace fs = std::filesystem;

namespace slimbert {

namespace {

// An embedding model (no classifier head) is scored on a labelled pair file: each pair's texts
// are embedded apart, with the model's own pooling, and the cosine of the two vectors is ranked
// against the label (an STS score, or a class index such as same / different): Spearman's rho.
struct PairVectors {
  at::Tensor a, b;  // (pairs, H)
  std::vector<double> gold;
};

PairVectors embed_pairs(const infer::InferenceModel& model, const Tokenizer& tokenizer,
                        const TaskSpec& spec, const std::string& split, int64_t max_length,
                        infer::Pooling pooling, const SubNet& run) {
  const EncodedPairs pairs =
      encode_pairs(tokenizer, spec, spec.load(split),
                   infer::max_input_length(model.config(), tokenizer, max_length), true);
  infer::RowWants wants;
  wants.poolings = {pooling};
  auto vectors = [&](const std::vector<Encoding>& in) {
    return infer::run_rows(model, in, run, tokenizer.pad_id(), {64, 0}, wants).pooled(pooling);
  };
  return {vectors(pairs.a), vectors(pairs.b), pairs.gold};
}

std::vector<double> row_cosines(const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor c = at::cosine_similarity(x, y, 1, 1e-12).to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// The full model's vectors per split, for how interchangeable each sub-network's are with them.
using FullVectors = std::map<std::string, PairVectors>;

// Scores and times one model at `run` (a slice of it, or (1, 1) for a static model) and reports
// the point as `label`. `splits` drops the unlabelled splits the first point finds. Progress
// lines start with `series`: one command may score the student and its teacher on one grid.
GridPoint evaluate_point(const infer::InferenceModel& model, const TensorMap& weights,
                         const Tokenizer& tokenizer, const TaskSpec& spec, const GridOptions& o,
                         const SubNet& run, const SubNet& label, std::vector<std::string>& splits,
                         bool first, const std::string& series, FullVectors* full = nullptr) {
  const std::string prefix =
      series.empty() ? "dynabert grid: " : "dynabert grid [" + series + "]: ";
  const BertConfig& config = model.config();
  GridPoint p;
  p.subnet = label;
  // A static model (possibly with pruned heads) runs whole; a dynamic one is sliced.
  const bool whole = run.width == 1.0 && run.depth == 1.0;
  auto [small, small_weights] =
      whole ? std::make_pair(config, weights) : extract_subnet(config, weights, run);
  p.layers = small.num_hidden_layers;
  p.heads = small.heads_in_layer(0);
  p.ffn = small.intermediate_size;
  for (const auto& [name, t] : small_weights)
    if (name.rfind("cls.", 0) != 0) p.parameters += t.numel();
  p.gflops = encoder_flops(config, o.latency_seq, run) / 1e9;
  // An embedding model's own pooling (sentence-transformers' modules), else the first token.
  const infer::Pooling pooling = model.has_classifier() || model.dir().empty()
                                     ? infer::Pooling::kCls
                                     : sentence_head_of(model.dir()).pooling;
  for (const auto& split : std::vector<std::string>(splits)) {
    EvalReport r;
    try {
      if (model.has_classifier()) {
        r = infer::evaluate(model, tokenizer, spec, split, o.max_length, 64, run);
      } else {
        const PairVectors v =
            embed_pairs(model, tokenizer, spec, split, o.max_length, pooling, run);
        r.metrics["main"] = spearman(row_cosines(v.a, v.b), v.gold);
        r.metrics["spearman"] = r.metrics["main"];
        if (full) {
          if (!full->count(split))
            (*full)[split] =
                embed_pairs(model, tokenizer, spec, split, o.max_length, pooling, {1.0, 1.0});
          const PairVectors& f = full->at(split);
          double sum = 0;
          std::vector<double> ca = row_cosines(v.a, f.a), cb = row_cosines(v.b, f.b);
          for (double c : ca) sum += c;
          for (double c : cb) sum += c;
          r.metrics["cosine_to_full"] = sum / static_cast<double>(ca.size() + cb.size());
        }
      }
    } catch (const InputError& e) {
      // GLUE test files have no labels: the first point finds out, later ones skip the split.
      if (!first) throw;
      std::cerr << prefix << split << " not scored: " << e.what() << "\n";
      splits.erase(std::find(splits.begin(), splits.end(), split));
      continue;
    }
    p.scores[split] = r.metrics.at("main");
    for (const auto& [k, v] : r.metrics)
      if (k != "main") p.metrics[split + "_" + k] = v;
  }
  if (splits.empty()) fail(spec.dir, ": no labelled split among the requested ones to score");
  for (int64_t b : o.latency_batches)
    p.latency_p50_ms[b] =
        infer::measure_latency(model, b, o.latency_seq, run, o.latency_iters, 2).p50;
  std::cerr << prefix << subnet_name(p.subnet);
  for (const auto& [split, v] : p.scores) std::cerr << " " << split << " " << v;
  for (const auto& [b, ms] : p.latency_p50_ms) std::cerr << " b" << b << " " << ms << " ms";
  std::cerr << "\n";
  return p;
}

std::vector<std::string> present_splits(const TaskSpec& spec, const GridOptions& o) {
  std::vector<std::string> splits;
  for (const auto& split : o.splits)
    if (fs::exists(spec.path(split))) splits.push_back(split);
  return splits;
}

// The task as the model reads it: its own labels for a classifier; as the files give them for an
// embedding model, which is scored on the pairs.
TaskSpec task_of(const infer::InferenceModel& model, const GridOptions& o) {
  if (model.has_classifier())
    return task_for_model(model.config(), o.task, o.data_dir, o.skip_bad_rows);
  return TaskSpec::make(o.task, o.data_dir, o.skip_bad_rows);
}

// One untimed round first: the first timings otherwise include thread and allocator start-up.
void warm_up(const infer::InferenceModel& model, const GridOptions& o) {
  for (int64_t b : o.latency_batches) infer::measure_latency(model, b, o.latency_seq, {}, 1, 3);
}

// The checkpoint as the inference model runs it, and its weights under HF names (for the sizes
// of the exported sub-networks).
std::pair<std::shared_ptr<const infer::InferenceModel>, TensorMap> load_for_grid(
    const std::string& dir, const GridOptions& o, const std::vector<double>& widths) {
  auto model = infer::InferenceModel::load(dir, infer::ModelOptions{o.int8, widths, o.gemm});
  if (!model->has_classifier()) return {model, load_weights(dir)};  // an embedding model
  return {model, state_dict(*load_classifier(dir))};
}

}  // namespace

std::vector<GridPoint> evaluate_grid(const std::string& model_dir, const GridOptions& o,
                                     const std::string& series) {
  const auto [model, weights] = load_for_grid(model_dir, o, o.widths);
  const Tokenizer tokenizer = Tokenizer::from_dir(model_dir);
  check_tokenizer_fits(tokenizer, model->config(), model_dir);
  const TaskSpec spec = task_of(*model, o);
  std::vector<std::string> splits = present_splits(spec, o);
  warm_up(*model, o);
  std::vector<GridPoint> points;
  FullVectors full;
  for (double d : o.depths)
    for (double w : o.widths)
      points.push_back(evaluate_point(*model, weights, tokenizer, spec, o, {w, d}, {w, d}, splits,
                                      points.empty(), series, &full));
  return points;
}

std::vector<std::pair<SubNet, std::string>> find_separate_models(const std::string& dir,
                                                                 const GridOptions& o) {
  std::vector<std::pair<SubNet, std::string>> found;
  for (double d : o.depths)
    for (double w : o.widths) {
      const std::string base = dir + "/" + subnet_name({w, d});
      for (const std::string& c : {base + "/best", base})
        if (fs::exists(c + "/config.json")) {
          found.push_back({{w, d}, c});
          break;
        }
    }
  if (found.empty())
    fail(dir, ": no separately trained model found (expected <dir>/", subnet_name({0.5, 1}),
         "/best/config.json or <dir>/", subnet_name({0.5, 1}), "/config.json per grid point)");
  return found;
}

std::vector<GridPoint> evaluate_separate(const std::string& dir, const GridOptions& o,
                                         const std::string& series) {
  std::vector<GridPoint> points;
  std::vector<std::string> splits;
  std::optional<TaskSpec> spec;
  for (const auto& [subnet, model_dir] : find_separate_models(dir, o)) {
    const auto [model, weights] = load_for_grid(model_dir, o, {1.0});
    const Tokenizer tokenizer = Tokenizer::from_dir(model_dir);
    check_tokenizer_fits(tokenizer, model->config(), model_dir);
    if (!spec) {
      spec = task_of(*model, o);
      splits = present_splits(*spec, o);
    }
    warm_up(*model, o);
    points.push_back(evaluate_point(*model, weights, tokenizer, *spec, o, {1, 1}, subnet, splits,
                                    points.empty(), series));
  }
  return points;
}

namespace {

nlohmann::json to_json(const GridPoint& p) {
  nlohmann::json lat;
  for (const auto& [b, ms] : p.latency_p50_ms) lat["batch" + std::to_string(b)] = ms;
  return {{"width", p.subnet.width},
          {"depth", p.subnet.depth},
          {"layers", p.layers},
          {"heads", p.heads},
          {"ffn", p.ffn},
          {"parameters", p.parameters},
          {"gflops", p.gflops},
          {"scores", p.scores},
          {"metrics", p.metrics},
          {"latency_p50_ms", lat}};
}

// The score plotted: test when it was scored, else dev.
double plotted_score(const GridPoint& p) {
  auto it = p.scores.find("test");
  return it != p.scores.end() ? it->second : p.scores.begin()->second;
}

std::string markdown(const GridSeries& s) {
  std::ostringstream md;
  md << "### " << s.name << "\n\n| width | depth | layers | heads | FFN | params (M) | GFLOPs |";
  const GridPoint& first = s.points.front();
  // An embedding model's points also say how close their vectors are to the full model's.
  std::vector<std::string> cosines;
  for (const auto& [split, v] : first.scores)
    if (first.metrics.count(split + "_cosine_to_full")) cosines.push_back(split);
  for (const auto& [split, v] : first.scores) md << " " << split << " |";
  for (const auto& split : cosines) md << " cosine to full (" << split << ") |";
  for (const auto& [b, ms] : first.latency_p50_ms) md << " p50 ms b" << b << " |";
  md << "\n|---:|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < first.scores.size() + cosines.size() + first.latency_p50_ms.size(); ++i)
    md << "---:|";
  md << "\n" << std::fixed;
  for (const auto& p : s.points) {
    md << "| " << std::setprecision(2) << p.subnet.width << " | " << p.subnet.depth << " | "
       << p.layers << " | " << p.heads << " | " << p.ffn << " | " << std::setprecision(2)
       << static_cast<double>(p.parameters) / 1e6 << " | " << std::setprecision(3) << p.gflops
       << " |";
    for (const auto& [split, v] : p.scores) md << " " << std::setprecision(4) << v << " |";
    for (const auto& split : cosines) {
      auto it = p.metrics.find(split + "_cosine_to_full");
      md << " " << std::setprecision(4) << (it == p.metrics.end() ? 0.0 : it->second) << " |";
    }
    for (const auto& [b, ms] : p.latency_p50_ms) md << " " << std::setprecision(2) << ms << " |";
    md << "\n";
  }
  return md.str();
}

}  // namespace

std::string write_grid_report(const std::vector<GridSeries>& series, const std::string& task,
                              const std::string& out_dir) {
  if (series.empty() || series.front().points.empty()) fail("dynabert grid: nothing to report");
  fs::create_directories(out_dir);
  nlohmann::json j = {
      {kSchemaVersionKey, kGridVersion}, {"task", task}, {"series", nlohmann::json::array()}};
  std::string md = "## " + task + ": accuracy x latency grid\n\n";
  std::vector<PlotSeries> by_latency, by_params;
  const bool test_scored = series.front().points.front().scores.count("test") > 0;
  for (const auto& s : series) {
    nlohmann::json points = nlohmann::json::array();
    PlotSeries lat{s.name, {}}, par{s.name, {}};
    for (const auto& p : s.points) {
      points.push_back(to_json(p));
      const std::string label = "w" + [&] {
        std::ostringstream l;
        l << p.subnet.width << ",d" << p.subnet.depth;
        return l.str();
      }();
      lat.points.push_back({p.latency_p50_ms.begin()->second, plotted_score(p), label});
      par.points.push_back({static_cast<double>(p.parameters) / 1e6, plotted_score(p), label});
    }
    j["series"].push_back({{"name", s.name}, {"points", points}});
    md += markdown(s) + "\n";
    by_latency.push_back(lat);
    by_params.push_back(par);
  }
  const std::string score = std::string(test_scored ? "test" : "dev") + " score (main metric)";
  const int64_t batch = series.front().points.front().latency_p50_ms.begin()->first;
  const std::string svg_latency = scatter_svg(
      task + ": score vs latency",
      "p50 latency, batch " + std::to_string(batch) + " x 128 tokens (ms)", score, by_latency);
  const std::string svg_params =
      scatter_svg(task + ": score vs parameters", "parameters (M)", score, by_params);
  write_file_atomic(out_dir + "/grid.json", j.dump(2) + "\n");
  write_file_atomic(out_dir + "/grid.md", md);
  write_file_atomic(out_dir + "/pareto-latency.svg", svg_latency);
  write_file_atomic(out_dir + "/pareto-params.svg", svg_params);
  std::string html = "<!doctype html><html><head><meta charset=\"utf-8\"><title>" +
                     xml_escape(task) +
                     " grid</title><style>body{font-family:sans-serif;margin:2em}table{border-"
                     "collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:"
                     "right}</style></head><body><h1>" +
                     xml_escape(task) +
                     ": accuracy x latency</h1><p>Lines connect each series' Pareto front "
                     "(no other point is both faster/smaller and better). Scores: " +
                     score + ".</p>" + svg_latency + svg_params;
  for (const auto& s : series) {
    html += "<h2>" + xml_escape(s.name) +
            "</h2><table><tr><th>width</th><th>depth</th>"
            "<th>layers</th><th>heads</th><th>FFN</th><th>params (M)</th><th>GFLOPs</th>";
    for (const auto& [split, v] : s.points.front().scores) html += "<th>" + split + "</th>";
    for (const auto& [b, ms] : s.points.front().latency_p50_ms)
      html += "<th>p50 ms b" + std::to_string(b) + "</th>";
    html += "</tr>";
    for (const auto& p : s.points) {
      std::ostringstream row;
      row << std::fixed << "<tr><td>" << std::setprecision(2) << p.subnet.width << "</td><td>"
          << p.subnet.depth << "</td><td>" << p.layers << "</td><td>" << p.heads << "</td><td>"
          << p.ffn << "</td><td>" << static_cast<double>(p.parameters) / 1e6 << "</td><td>"
          << std::setprecision(3) << p.gflops << "</td>";
      for (const auto& [split, v] : p.scores) row << "<td>" << std::setprecision(4) << v << "</td>";
      for (const auto& [b, ms] : p.latency_p50_ms)
        row << "<td>" << std::setprecision(2) << ms << "</td>";
      html += row.str() + "</tr>";
    }
    html += "</table>";
  }
  html += "</body></html>\n";
  const std::string path = out_dir + "/grid.html";
  write_file_atomic(path, html);
  return path;
}

}  // namespace slimbert
