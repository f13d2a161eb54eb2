#include "slimbert/pipeline/report.h"

#include <iomanip>
#include <sstream>

#include "slimbert/report/plot.h"

namespace slimbert {
namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string general(double v) {  // 0.0001 -> "0.0001", 1e-05 -> "1e-05", as %g writes them
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string point_label(const nlohmann::json& p) {
  std::ostringstream l;
  l << "w" << p.at("width").get<double>() << ",d" << p.at("depth").get<double>();
  return l.str();
}

double dev_of(const nlohmann::json& p) {
  return p.at("scores").value("dev", 0.0);
}

// Bytes of a grid point's weights: fp32 everywhere, or (int8) the encoder's linear weights at one
// byte each, which is what dynamic quantization stores.
double size_mb(const nlohmann::json& p, bool int8, int64_t hidden, int64_t head_size) {
  const double params = p.at("parameters").get<double>();
  if (!int8) return params * 4 / 1e6;
  const double inner = p.at("heads").get<double>() * static_cast<double>(head_size);
  const double h = static_cast<double>(hidden), f = p.at("ffn").get<double>();
  const double linear = p.at("layers").get<double>() * (4 * h * inner + 2 * h * f);
  return ((params - linear) * 4 + linear) / 1e6;
}

// Shown when the page is opened with #check: every point label and reference label inside its
// plot frame and clear of the others, every text inside its SVG.
const char* kLayoutCheck = R"JS(
<script>
window.addEventListener('load', function () {
  if (location.hash !== '#check') return;
  var problems = [];
  var inside = function (a, b) {
    return a.left >= b.left - 0.5 && a.right <= b.right + 0.5 &&
           a.top >= b.top - 0.5 && a.bottom <= b.bottom + 0.5;
  };
  var overlap = function (a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  };
  var svgs = document.querySelectorAll('svg');
  svgs.forEach(function (svg, i) {
    var box = svg.getBoundingClientRect();
    var frame = svg.querySelector('rect.frame').getBoundingClientRect();
    svg.querySelectorAll('text').forEach(function (t) {
      if (!inside(t.getBoundingClientRect(), box)) problems.push('plot ' + i + ': "' + t.textContent + '" leaves the picture');
    });
    var labels = Array.prototype.slice.call(svg.querySelectorAll('text.point-label'));
    labels.forEach(function (t, a) {
      var r = t.getBoundingClientRect();
      if (!inside(r, frame)) problems.push('plot ' + i + ': label "' + t.textContent + '" crosses the frame');
      for (var b = a + 1; b < labels.length; ++b)
        if (overlap(r, labels[b].getBoundingClientRect()))
          problems.push('plot ' + i + ': "' + t.textContent + '" overlaps "' + labels[b].textContent + '"');
    });
  });
  var out = document.getElementById('layout-check');
  out.textContent = 'plots ' + svgs.length + '\n' + (problems.length ? problems.join('\n') : 'ok');
});
</script>
)JS";

}  // namespace

std::string compress_report_html(const ReportInput& in) {
  double teacher = 0;
  std::vector<PlotSeries> by_latency, by_params, by_size;
  for (const auto& s : in.grid.at("series")) {
    const std::string name = s.at("name").get<std::string>();
    if (name == "teacher") {
      teacher = dev_of(s.at("points").at(0));
      continue;
    }
    PlotSeries lat{name, {}}, par{name, {}}, size{name, {}};
    const bool int8 = name.find("int8") != std::string::npos;
    for (const auto& p : s.at("points")) {
      const std::string label = point_label(p);
      const double dev = dev_of(p);
      lat.points.push_back({p.at("latency_p50_ms").begin()->get<double>(), dev, label});
      if (!int8) par.points.push_back({p.at("parameters").get<double>() / 1e6, dev, label});
      size.points.push_back({size_mb(p, int8, in.hidden_size, in.head_size), dev, label});
    }
    by_latency.push_back(lat);
    if (!par.points.empty()) by_params.push_back(par);
    by_size.push_back(size);
  }
  const std::vector<PlotReference> ref = {{teacher, "teacher " + fixed(teacher, 4)}};
  const std::string batch1 = "batch 1 x " + std::to_string(in.max_length) + " tokens";
  std::string html =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>slimbert compress: " +
      xml_escape(in.task) +
      "</title><style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
      "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
      "text-align:right}td.l,th.l{text-align:left}tr.chosen{background:#eef6ee}"
      "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}svg{display:block;margin:1em 0}"
      "</style></head><body><h1>" +
      xml_escape(in.task) + ": compressed with " + xml_escape(in.method) + "</h1>";
  html += "<p>Teacher: <code>" + xml_escape(in.teacher_dir) + "</code>, dev score " +
          fixed(teacher, 4) + ". Every sub-network: <code>" + xml_escape(in.model_dir) +
          "</code>.</p>";

  html +=
      "<h2>Exported models</h2><p>The Pareto-optimal sub-networks (no other is both faster "
      "and better on dev), as standalone HuggingFace checkpoints. The chosen one is ";
  html += in.budget_ms > 0 ? "the most accurate whose predicted p99 latency fits " +
                                 fixed(in.budget_ms, 1) + " ms at " + batch1 + "."
                           : "the fastest that keeps 99% of the teacher's dev score.";
  html +=
      "</p><table><tr><th class=l>model</th><th>dev</th><th>% of teacher</th>"
      "<th>p50 ms (" +
      batch1 + ")</th><th>size (MB)</th><th class=l>directory</th></tr>";
  std::string chosen_dir;
  for (const auto& m : in.exports) {
    const bool chosen = m.at("chosen").get<bool>();
    if (chosen) chosen_dir = m.at("dir").get<std::string>();
    html += std::string("<tr") + (chosen ? " class=chosen" : "") + "><td class=l>" +
            point_label(m) + (chosen ? " (chosen)" : "") + "</td><td>" +
            fixed(m.at("dev").get<double>(), 4) + "</td><td>" +
            (teacher > 0 ? fixed(100 * m.at("dev").get<double>() / teacher, 1) : "-") +
            "</td><td>" + fixed(m.at("latency_ms").get<double>(), 2) + "</td><td>" +
            fixed(m.at("size_mb").get<double>(), 1) + "</td><td class=l><code>" +
            xml_escape(m.at("dir").get<std::string>()) + "</code></td></tr>";
  }
  html +=
      "</table><p>Serve the chosen model, or every sub-network of the adaptive one (each "
      "request names a width and depth, or a latency budget):</p><pre>slimbert serve " +
      xml_escape(chosen_dir) + " --port 8080\nslimbert serve " + xml_escape(in.model_dir) +
      " --port 8080</pre>";

  html +=
      "<h2>Accuracy against cost</h2><p>Dev scores (main metric). Lines connect each "
      "series' Pareto front; the dashed line is the teacher.</p>";
  html += scatter_svg(in.task + ": dev score vs latency", "p50 latency, " + batch1 + " (ms)",
                      "dev score", by_latency, 860, 480, ref);
  html += scatter_svg(in.task + ": dev score vs size", "model size (MB)", "dev score", by_size, 860,
                      480, ref);
  html += scatter_svg(in.task + ": dev score vs parameters", "parameters (M)", "dev score",
                      by_params, 860, 480, ref);

  html += "<h2>Grid</h2>";
  for (const auto& s : in.grid.at("series")) {
    html += "<h3>" + xml_escape(s.at("name").get<std::string>()) +
            "</h3><table><tr><th>width</th><th>depth</th><th>layers</th><th>heads</th>"
            "<th>FFN</th><th>params (M)</th><th>GFLOPs</th>";
    const auto& first = s.at("points").at(0);
    for (const auto& [split, v] : first.at("scores").items()) html += "<th>" + split + "</th>";
    html += "<th>p50 ms</th></tr>";
    for (const auto& p : s.at("points")) {
      html += "<tr><td>" + fixed(p.at("width").get<double>(), 2) + "</td><td>" +
              fixed(p.at("depth").get<double>(), 2) + "</td><td>" +
              std::to_string(p.at("layers").get<int64_t>()) + "</td><td>" +
              std::to_string(p.at("heads").get<int64_t>()) + "</td><td>" +
              std::to_string(p.at("ffn").get<int64_t>()) + "</td><td>" +
              fixed(p.at("parameters").get<double>() / 1e6, 2) + "</td><td>" +
              fixed(p.at("gflops").get<double>(), 3) + "</td>";
      for (const auto& [split, v] : p.at("scores").items())
        html += "<td>" + fixed(v.get<double>(), 4) + "</td>";
      html += "<td>" + fixed(p.at("latency_p50_ms").begin()->get<double>(), 2) + "</td></tr>";
    }
    html += "</table>";
  }

  html +=
      "<h2>Stages</h2><table><tr><th class=l>stage</th><th>seconds</th><th>lr</th>"
      "<th>best dev (DynaBERT stages: summed over the sub-networks)</th><th "
      "class=l>result</th></tr>";
  for (const auto& [name, r] : in.stages)
    html +=
        "<tr><td class=l>" + xml_escape(name) + "</td><td>" + fixed(r.value("seconds", 0.0), 0) +
        "</td><td>" + (r.contains("lr") ? general(r.at("lr").get<double>()) : "") + "</td><td>" +
        (r.contains("dev") ? fixed(r.at("dev").get<double>(), 4) : "") + "</td><td class=l><code>" +
        xml_escape(r.contains("model") ? r.at("model").get<std::string>() : "") +
        "</code></td></tr>";
  html += "</table><h2>Command</h2><pre>" + xml_escape(in.command) + "</pre>";
  html += "<pre id=\"layout-check\"></pre>";
  html += kLayoutCheck;
  html += "</body></html>\n";
  return html;
}

}  // namespace slimbert
