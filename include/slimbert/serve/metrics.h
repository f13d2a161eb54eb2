// The server's Prometheus metrics: requests by endpoint and status, batch sizes, per-stage
// times, the sub-networks chosen, and the latency-budget counts. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "slimbert/model/bert.h"

namespace slimbert::serve {

// A histogram in Prometheus' cumulative-bucket form.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void add(double value);
  // `name`_bucket{labels,le=...}, `name`_sum and `name`_count lines.
  void write(std::ostream& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Where one answered request spent its time.
struct RequestTimes {
  double queue_ms = 0, tokenization_ms = 0, inference_ms = 0, total_ms = 0;
};

class Metrics {
 public:
  Metrics();
  void count(const std::string& endpoint, int status);
  // One forward batch of `rows` texts from `requests` requests, run at `subnet`.
  void batch(int64_t rows, const SubNet& subnet, size_t requests);
  // An answered inference request; `budget_ms` > 0 when it had a latency budget.
  void request(const RequestTimes& times, double budget_ms);
  // A budget request answered 429 at once.
  void shed();
  // The text exposition format; `queue_size` is the queue's length now, `connections` the
  // connections being served now (the one asking included).
  std::string text(size_t queue_size, size_t connections) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) -> count
  std::map<std::string, uint64_t> subnet_chosen_;
  uint64_t budget_requests_ = 0, budget_met_ = 0, budget_shed_ = 0;
  Histogram batch_size_;
  std::map<std::string, Histogram> stage_ms_;
};

}  // namespace slimbert::serve
