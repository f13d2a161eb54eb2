#include "slimbert/data/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "slimbert/core/error.h"

namespace slimbert {
namespace {

void check(size_t a, size_t b) {
  if (a != b) fail("metrics: ", a, " predictions for ", b, " labels");
  if (a == 0) fail("metrics: no examples");
}

std::vector<double> ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double avg = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (size_t k = i; k <= j; ++k) r[order[k]] = avg;
    i = j + 1;
  }
  return r;
}

}  // namespace

double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
  check(pred.size(), gold.size());
  size_t ok = 0;
  for (size_t i = 0; i < pred.size(); ++i) ok += pred[i] == gold[i];
  return static_cast<double>(ok) / static_cast<double>(pred.size());
}

double f1_binary(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
  check(pred.size(), gold.size());
  double tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    tp += pred[i] == 1 && gold[i] == 1;
    fp += pred[i] == 1 && gold[i] != 1;
    fn += pred[i] != 1 && gold[i] == 1;
  }
  return tp == 0 ? 0.0 : 2 * tp / (2 * tp + fp + fn);
}

double matthews(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
  check(pred.size(), gold.size());
  double tp = 0, tn = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    tp += pred[i] == 1 && gold[i] == 1;
    tn += pred[i] != 1 && gold[i] != 1;
    fp += pred[i] == 1 && gold[i] != 1;
    fn += pred[i] != 1 && gold[i] == 1;
  }
  const double denom = std::sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
  return denom == 0 ? 0.0 : (tp * tn - fp * fn) / denom;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check(x.size(), y.size());
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx == 0 || syy == 0 ? 0.0 : sxy / std::sqrt(sxx * syy);
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return pearson(ranks(x), ranks(y));
}

std::map<std::string, double> classification_metrics(const std::vector<int64_t>& pred,
                                                     const std::vector<int64_t>& gold,
                                                     const std::string& main_metric) {
  std::map<std::string, double> m;
  m["accuracy"] = accuracy(pred, gold);
  const bool binary =
      std::all_of(gold.begin(), gold.end(), [](int64_t g) { return g == 0 || g == 1; }) &&
      std::all_of(pred.begin(), pred.end(), [](int64_t p) { return p == 0 || p == 1; });
  if (binary) {
    m["f1"] = f1_binary(pred, gold);
    m["mcc"] = matthews(pred, gold);
    m["acc_and_f1"] = (m["accuracy"] + m["f1"]) / 2;
  }
  if (!m.count(main_metric)) fail("metric '", main_metric, "' does not apply to these labels");
  m["main"] = m[main_metric];
  return m;
}

std::map<std::string, double> regression_metrics(const std::vector<double>& pred,
                                                 const std::vector<double>& gold) {
  std::map<std::string, double> m;
  m["pearson"] = pearson(pred, gold);
  m["spearman"] = spearman(pred, gold);
  m["corr"] = (m["pearson"] + m["spearman"]) / 2;
  double se = 0;
  for (size_t i = 0; i < pred.size(); ++i) se += (pred[i] - gold[i]) * (pred[i] - gold[i]);
  m["mse"] = se / static_cast<double>(pred.size());
  m["main"] = m["corr"];
  return m;
}

}  // namespace slimbert
