#include "slimbert/report/plot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <sstream>

namespace slimbert {

std::vector<size_t> pareto_front(const std::vector<PlotPoint>& p) {
  std::vector<size_t> front;
  for (size_t i = 0; i < p.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < p.size() && !dominated; ++j)
      dominated =
          j != i && p[j].x <= p[i].x && p[j].y >= p[i].y && (p[j].x < p[i].x || p[j].y > p[i].y);
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return p[a].x < p[b].x; });
  return front;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

// Round tick steps (1, 2, 5 x 10^k) covering [lo, hi] with about five ticks.
std::vector<double> ticks(double lo, double hi) {
  const double raw = (hi - lo) / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw > 0 ? raw : 1.0)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push_back(t);
  return out;
}

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

}  // namespace

std::string scatter_svg(const std::string& title, const std::string& x_label,
                        const std::string& y_label, const std::vector<PlotSeries>& series,
                        int width, int height, const std::vector<PlotReference>& references) {
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (const auto& p : s.points) {
      x0 = std::min(x0, p.x), x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
    }
  for (const auto& r : references) y0 = std::min(y0, r.y), y1 = std::max(y1, r.y);
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  const double xpad = (x1 - x0) * 0.08 + 1e-9, ypad = (y1 - y0) * 0.1 + 1e-9;
  x0 -= xpad, x1 += xpad, y0 -= ypad, y1 += ypad;
  const double left = 64, right = 150, top = 36, bottom = 48;
  const double pw = width - left - right, ph = height - top - bottom;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left + pw / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">"
      << xml_escape(title) << "</text>\n";
  for (double t : ticks(x0, x1))
    svg << "<line x1=\"" << X(t) << "\" y1=\"" << top << "\" x2=\"" << X(t) << "\" y2=\""
        << top + ph << "\" stroke=\"#eee\"/><text x=\"" << X(t) << "\" y=\"" << top + ph + 14
        << "\" text-anchor=\"middle\">" << fmt(t) << "</text>\n";
  for (double t : ticks(y0, y1))
    svg << "<line x1=\"" << left << "\" y1=\"" << Y(t) << "\" x2=\"" << left + pw << "\" y2=\""
        << Y(t) << "\" stroke=\"#eee\"/><text x=\"" << left - 6 << "\" y=\"" << Y(t) + 4
        << "\" text-anchor=\"end\">" << fmt(t) << "</text>\n";
  svg << "<rect class=\"frame\" x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw
      << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#888\"/>\n"
      << "<text x=\"" << left + pw / 2 << "\" y=\"" << height - 10 << "\" text-anchor=\"middle\">"
      << xml_escape(x_label) << "</text>\n"
      << "<text transform=\"translate(16," << top + ph / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(y_label) << "</text>\n";
  // Label boxes (x0, y0, x1, y1) estimated at 5.4 px per character of the 9 px font.
  struct Box {
    double x0, y0, x1, y1;
  };
  std::vector<Box> taken;
  auto place = [&](double px, double py,
                   const std::string& label) -> std::optional<std::pair<double, double>> {
    const double w = 5.4 * static_cast<double>(label.size()), h = 9;
    const std::pair<double, double> offsets[] = {{6, -5},      {6, 12},      {-6 - w, -5},
                                                 {-6 - w, 12}, {-w / 2, -8}, {-w / 2, 17}};
    for (const auto& [dx, dy] : offsets) {
      const Box b{px + dx, py + dy - h, px + dx + w, py + dy + 2};
      if (b.x0 < left + 1 || b.x1 > left + pw - 1 || b.y0 < top + 1 || b.y1 > top + ph - 1)
        continue;
      const bool clear = std::none_of(taken.begin(), taken.end(), [&](const Box& o) {
        return b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1;
      });
      if (!clear) continue;
      taken.push_back(b);
      return std::make_pair(px + dx, py + dy);
    }
    return std::nullopt;
  };
  for (const auto& r : references) {
    svg << "<line x1=\"" << left << "\" y1=\"" << Y(r.y) << "\" x2=\"" << left + pw << "\" y2=\""
        << Y(r.y) << "\" stroke=\"#555\" stroke-dasharray=\"5,4\"/>\n";
    taken.push_back({left + pw - 6.0 - 6.0 * static_cast<double>(r.label.size()), Y(r.y) - 14,
                     left + pw - 4.0, Y(r.y) - 2});
    svg << "<text class=\"point-label\" x=\"" << left + pw - 4 << "\" y=\"" << Y(r.y) - 4
        << "\" text-anchor=\"end\" font-size=\"10\" fill=\"#555\">" << xml_escape(r.label)
        << "</text>\n";
  }
  // Every point's dot first: labels must not cover any of them.
  for (const auto& s : series)
    for (const auto& p : s.points)
      taken.push_back({X(p.x) - 4, Y(p.y) - 4, X(p.x) + 4, Y(p.y) + 4});
  for (size_t si = 0; si < series.size(); ++si) {
    const auto& s = series[si];
    const std::string colour = colours[si % 6];
    const auto front = pareto_front(s.points);
    if (front.size() > 1) {
      svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"";
      for (size_t i : front) svg << X(s.points[i].x) << "," << Y(s.points[i].y) << " ";
      svg << "\"/>\n";
    }
    for (const auto& p : s.points) {
      svg << "<circle cx=\"" << X(p.x) << "\" cy=\"" << Y(p.y) << "\" r=\"3.5\" fill=\"" << colour
          << "\"><title>"
          << xml_escape(s.name + " " + p.label + ": " + fmt(p.y) + " at " + fmt(p.x))
          << "</title></circle>\n";
      if (const auto at = place(X(p.x), Y(p.y), p.label))
        svg << "<text class=\"point-label\" x=\"" << at->first << "\" y=\"" << at->second
            << "\" font-size=\"9\" fill=\"" << colour << "\">" << xml_escape(p.label)
            << "</text>\n";
    }
    svg << "<rect x=\"" << left + pw + 14 << "\" y=\"" << top + 16 * si << "\" width=\"10\" "
        << "height=\"10\" fill=\"" << colour << "\"/><text x=\"" << left + pw + 28 << "\" y=\""
        << top + 16 * si + 9 << "\">" << xml_escape(s.name) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace slimbert
