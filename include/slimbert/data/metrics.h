// GLUE metrics, computed from predictions and gold labels.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace slimbert {

double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);
// F1 of the positive class (label 1), as GLUE scores MRPC and QQP.
double f1_binary(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);
// Matthews correlation (binary), as GLUE scores CoLA; 0 when undefined.
double matthews(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);
double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);  // ties: average ranks

// Every metric that applies, plus "main" = the task's main metric:
// accuracy | f1 | mcc | acc_and_f1 (mean of both) | corr (mean of Pearson and Spearman).
std::map<std::string, double> classification_metrics(const std::vector<int64_t>& pred,
                                                     const std::vector<int64_t>& gold,
                                                     const std::string& main_metric);
std::map<std::string, double> regression_metrics(const std::vector<double>& pred,
                                                 const std::vector<double>& gold);

}  // namespace slimbert
