#include "slimbert/serve/metrics.h"

#include <sstream>

namespace slimbert::serve {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}

void Histogram::add(double value) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (value <= bounds_[i]) ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::write(std::ostream& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < bounds_.size(); ++i)
    out << name << "_bucket{" << labels << sep << "le=\"" << bounds_[i] << "\"} " << counts_[i]
        << "\n";
  out << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << count_ << "\n";
  const std::string braced = labels.empty() ? "" : "{" + labels + "}";
  out << name << "_sum" << braced << " " << sum_ << "\n";
  out << name << "_count" << braced << " " << count_ << "\n";
}

Metrics::Metrics() : batch_size_({1, 2, 4, 8, 16, 32, 64, 128}) {
  for (const char* stage : {"queue", "tokenization", "inference", "total"})
    stage_ms_.emplace(stage, Histogram({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000}));
}

void Metrics::count(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::batch(int64_t rows, const SubNet& subnet, size_t requests) {
  std::lock_guard<std::mutex> lock(mu_);
  batch_size_.add(static_cast<double>(rows));
  subnet_chosen_[subnet_name(subnet)] += requests;
}

void Metrics::request(const RequestTimes& t, double budget_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  stage_ms_.at("queue").add(t.queue_ms);
  stage_ms_.at("tokenization").add(t.tokenization_ms);
  stage_ms_.at("inference").add(t.inference_ms);
  stage_ms_.at("total").add(t.total_ms);
  if (budget_ms > 0) {
    ++budget_requests_;
    budget_met_ += t.total_ms <= budget_ms;
  }
}

void Metrics::shed() {
  std::lock_guard<std::mutex> lock(mu_);
  ++budget_shed_;
}

std::string Metrics::text(size_t queue_size, size_t connections) const {
  std::ostringstream out;
  std::lock_guard<std::mutex> lock(mu_);
  out << "# HELP slimbert_requests_total Requests by endpoint and HTTP status.\n"
      << "# TYPE slimbert_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out << "slimbert_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second
        << "\"} " << n << "\n";
  out << "# HELP slimbert_queue_size Requests waiting for the model.\n"
      << "# TYPE slimbert_queue_size gauge\nslimbert_queue_size " << queue_size << "\n";
  out << "# HELP slimbert_open_connections Connections open now (idle kept-alive ones included).\n"
      << "# TYPE slimbert_open_connections gauge\nslimbert_open_connections " << connections
      << "\n";
  out << "# HELP slimbert_batch_size Texts per forward batch.\n"
      << "# TYPE slimbert_batch_size histogram\n";
  batch_size_.write(out, "slimbert_batch_size", "");
  out << "# HELP slimbert_stage_duration_ms Time per request stage.\n"
      << "# TYPE slimbert_stage_duration_ms histogram\n";
  for (const auto& [stage, h] : stage_ms_)
    h.write(out, "slimbert_stage_duration_ms", "stage=\"" + stage + "\"");
  out << "# HELP slimbert_subnet_chosen_total Requests run by each sub-network.\n"
      << "# TYPE slimbert_subnet_chosen_total counter\n";
  for (const auto& [s, n] : subnet_chosen_)
    out << "slimbert_subnet_chosen_total{subnet=\"" << s << "\"} " << n << "\n";
  out << "# HELP slimbert_budget_requests_total Requests with a latency budget, and those "
         "answered within it.\n# TYPE slimbert_budget_requests_total counter\n"
      << "slimbert_budget_requests_total " << budget_requests_ << "\n"
      << "# HELP slimbert_budget_shed_total Requests answered 429 at once because their budget "
         "could not be met.\n# TYPE slimbert_budget_shed_total counter\n"
      << "slimbert_budget_shed_total " << budget_shed_ << "\n"
      << "# TYPE slimbert_budget_met_total counter\nslimbert_budget_met_total " << budget_met_
      << "\n";
  return out.str();
}

}  // namespace slimbert::serve
