// Scatter plots as standalone SVG (no plotting library on the machine; the format is simple):
// several labelled series, each optionally with its Pareto front drawn as a line.
#pragma once

#include <string>
#include <vector>

namespace slimbert {

struct PlotPoint {
  double x = 0, y = 0;
  std::string label;  // drawn next to the point
};

struct PlotSeries {
  std::string name;
  std::vector<PlotPoint> points;
};

// Indices of the points not dominated by another (smaller or equal x and larger or equal y,
// one strictly), sorted by x.
std::vector<size_t> pareto_front(const std::vector<PlotPoint>& points);

// A horizontal line across the plot at y (e.g. the teacher's score), labelled.
struct PlotReference {
  double y = 0;
  std::string label;
};

// An SVG scatter plot; each series gets a colour, a legend entry and its Pareto front as a line.
// Point labels are placed beside their points where they overlap no other label and stay inside
// the frame (class "point-label"; a label that fits nowhere is left to the point's tooltip); the
// frame is the rect of class "frame".
std::string scatter_svg(const std::string& title, const std::string& x_label,
                        const std::string& y_label, const std::vector<PlotSeries>& series,
                        int width = 560, int height = 380,
                        const std::vector<PlotReference>& references = {});

// Escapes text for XML/HTML.
std::string xml_escape(const std::string& text);

}  // namespace slimbert
