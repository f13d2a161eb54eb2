#include "slimbert/serve/server.h"

#include <ATen/ATen.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"
#include "slimbert/infer/run.h"
#include "slimbert/serve/request.h"

namespace slimbert::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// What the model thread returns for one request.
struct Result {
  SubNet subnet;
  at::Tensor logits;      // (rows, labels) predict
  at::Tensor embeddings;  // (rows, H) embed
  double queue_ms = 0, inference_ms = 0;
  int64_t batch_requests = 0, batch_rows = 0;
  std::string error;  // the forward failed (answered 500)
};

// One request waiting for the model.
struct Job {
  Request request;
  std::vector<Encoding> encodings;
  int64_t max_len = 0;
  Clock::time_point arrived;
  std::optional<SubNet> fixed;  // explicit width/depth
  std::promise<Result> done;
};

// Histograms in Prometheus' cumulative-bucket form.
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size(), 0) {}
  void add(double v) {
    for (size_t i = 0; i < bounds.size(); ++i)
      if (v <= bounds[i]) ++counts[i];
    sum += v;
    ++count;
  }
  void write(std::ostream& out, const std::string& name, const std::string& labels) const {
    const std::string sep = labels.empty() ? "" : ",";
    for (size_t i = 0; i < bounds.size(); ++i)
      out << name << "_bucket{" << labels << sep << "le=\"" << bounds[i] << "\"} " << counts[i]
          << "\n";
    out << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << count << "\n";
    const std::string braced = labels.empty() ? "" : "{" + labels + "}";
    out << name << "_sum" << braced << " " << sum << "\n";
    out << name << "_count" << braced << " " << count << "\n";
  }
};

}  // namespace

struct Server::Impl {
  std::shared_ptr<const infer::InferenceModel> model;
  Tokenizer tokenizer;
  infer::LatencyProfile profile;
  ServerOptions options;
  int64_t max_length = 0;
  httplib::Server http;
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool stopping = false;
  std::thread worker;

  // Metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  std::map<std::string, uint64_t> subnet_chosen;
  uint64_t budget_requests = 0, budget_met = 0;
  std::atomic<uint64_t> budget_shed{0};  // counted under mu, read under metrics_mu
  Clock::time_point busy_until;          // predicted end of the batch running now (under mu)
  Histogram batch_size{{1, 2, 4, 8, 16, 32, 64, 128}};
  std::map<std::string, Histogram> stage_ms;

  Impl(std::shared_ptr<const infer::InferenceModel> m, Tokenizer t, infer::LatencyProfile p,
       ServerOptions o)
      : model(std::move(m)), tokenizer(std::move(t)), profile(std::move(p)), options(std::move(o)) {
    const BertConfig& c = model->config();
    max_length = std::min(c.max_position_embeddings, tokenizer.options().model_max_length);
    if (options.max_length > 0) max_length = std::min(max_length, options.max_length);
    for (const char* stage : {"queue", "tokenization", "inference", "total"})
      stage_ms.emplace(stage, Histogram({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000}));
    infer::parse_pooling(options.pooling);
  }

  // ---- The model thread ----------------------------------------------------------------------

  // The sub-network for `job` if it ran now in a batch of (rows, len).
  SubNet choose(const Job& job, Clock::time_point now, int64_t rows, int64_t len) const {
    if (job.fixed) return *job.fixed;
    const double left = *job.request.latency_budget_ms - ms_between(job.arrived, now);
    return profile.choose(left, {rows, len}).subnet;
  }

  // Predicted p99 of `job` alone at the fastest sub-network.
  double fastest_ms(const Job& job) const {
    const infer::Shape shape{static_cast<int64_t>(job.encodings.size()), job.max_len};
    const infer::SubnetProfile& p = profile.choose(0.0, shape);
    return p.predict_ms(shape) * p.tail;
  }

  bool fits(const Job& job, Clock::time_point now, const SubNet& s, int64_t rows,
            int64_t len) const {
    if (job.fixed) return true;
    const infer::SubnetProfile* p = profile.find(s);
    const double left = *job.request.latency_budget_ms - ms_between(job.arrived, now);
    return p && p->predict_ms({rows, len}) * p->tail <= left;
  }

  // Takes the first request and every waiting one that runs the same sub-network within the
  // batch limits (and, for budgets, still fits every budget in the batch).
  std::vector<std::shared_ptr<Job>> take_batch(SubNet* subnet) {
    const Clock::time_point now = Clock::now();
    std::vector<std::shared_ptr<Job>> batch{queue.front()};
    queue.pop_front();
    int64_t rows = static_cast<int64_t>(batch[0]->encodings.size()), len = batch[0]->max_len;
    *subnet = choose(*batch[0], now, rows, len);
    for (auto it = queue.begin(); it != queue.end();) {
      const Job& j = **it;
      const int64_t r = rows + static_cast<int64_t>(j.encodings.size());
      const int64_t l = std::max(len, j.max_len);
      bool ok =
          static_cast<int64_t>(batch.size()) < options.max_batch_requests &&
          r * l <= options.max_batch_tokens &&
          same_subnet(choose(j, now, static_cast<int64_t>(j.encodings.size()), j.max_len), *subnet);
      if (ok && !batch[0]->fixed)
        for (const auto& b : batch) ok = ok && fits(*b, now, *subnet, r, l);
      if (ok && !j.fixed) ok = fits(j, now, *subnet, r, l);
      if (!ok) {
        ++it;
        continue;
      }
      batch.push_back(*it);
      rows = r;
      len = l;
      it = queue.erase(it);
    }
    return batch;
  }

  void run_batch(const std::vector<std::shared_ptr<Job>>& jobs, const SubNet& subnet) {
    const Clock::time_point start = Clock::now();
    std::vector<Encoding> all;
    std::vector<std::pair<size_t, size_t>> spans;
    for (const auto& j : jobs) {
      spans.push_back({all.size(), j->encodings.size()});
      all.insert(all.end(), j->encodings.begin(), j->encodings.end());
    }
    std::vector<Result> results(jobs.size());
    try {
      // Length order in chunks of at most max_batch_tokens padded tokens (a single request may
      // be larger than one chunk).
      std::vector<size_t> order(all.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return all[a].input_ids.size() < all[b].input_ids.size();
      });
      const int64_t H = model->config().hidden_size;
      at::Tensor last_cls = at::empty({static_cast<int64_t>(all.size()), H});
      at::Tensor last_mean = at::empty({static_cast<int64_t>(all.size()), H});
      at::Tensor logits;
      if (model->has_classifier())
        logits = at::empty({static_cast<int64_t>(all.size()), model->config().num_labels()});
      for (size_t b = 0; b < order.size();) {
        size_t e = b + 1;
        while (e < order.size() && static_cast<int64_t>(e + 1 - b) *
                                           static_cast<int64_t>(all[order[e]].input_ids.size()) <=
                                       options.max_batch_tokens)
          ++e;
        const std::vector<size_t> idx(order.begin() + static_cast<std::ptrdiff_t>(b),
                                      order.begin() + static_cast<std::ptrdiff_t>(e));
        const Batch batch = collate(all, idx, tokenizer.pad_id());
        const infer::Output out = model->forward(batch, subnet);
        std::vector<int64_t> rows(idx.begin(), idx.end());
        const at::Tensor at_rows = at::tensor(rows);
        last_cls.index_copy_(0, at_rows, infer::pool(out, batch, infer::Pooling::kCls).cpu());
        last_mean.index_copy_(0, at_rows, infer::pool(out, batch, infer::Pooling::kMean).cpu());
        if (logits.defined()) logits.index_copy_(0, at_rows, out.logits.cpu());
        b = e;
      }
      for (size_t k = 0; k < jobs.size(); ++k) {
        const auto [begin, n] = spans[k];
        const Request& r = jobs[k]->request;
        Result& res = results[k];
        if (r.endpoint == Endpoint::kPredict) {
          res.logits = logits.narrow(0, static_cast<int64_t>(begin), static_cast<int64_t>(n));
        } else {
          const bool mean = r.pooling.value_or(options.pooling) == "mean";
          at::Tensor v = (mean ? last_mean : last_cls)
                             .narrow(0, static_cast<int64_t>(begin), static_cast<int64_t>(n));
          if (r.normalize) v = v / v.norm(2, 1, true).clamp_min(1e-12);
          res.embeddings = v;
        }
      }
    } catch (const std::exception& e) {
      for (Result& r : results) r.error = e.what();
    }
    const Clock::time_point end = Clock::now();
    int64_t rows = 0;
    for (const auto& j : jobs) rows += static_cast<int64_t>(j->encodings.size());
    {
      std::lock_guard<std::mutex> lock(metrics_mu);
      batch_size.add(static_cast<double>(rows));
      subnet_chosen[subnet_name(subnet)] += jobs.size();
    }
    for (size_t k = 0; k < jobs.size(); ++k) {
      Result& r = results[k];
      r.subnet = subnet;
      r.queue_ms = ms_between(jobs[k]->arrived, start);
      r.inference_ms = ms_between(start, end);
      r.batch_requests = static_cast<int64_t>(jobs.size());
      r.batch_rows = rows;
      jobs[k]->done.set_value(std::move(r));
    }
  }

  void work() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping, nothing left
      // Wait briefly for company unless the batch is full already. A budget request does not
      // wait: its time is better spent on a larger sub-network, and under load the queue
      // holds company anyway.
      const Job& head = *queue.front();
      const double wait_ms = head.request.latency_budget_ms ? 0.0 : options.max_wait_ms;
      const auto deadline =
          head.arrived + std::chrono::microseconds(static_cast<int64_t>(wait_ms * 1000.0));
      while (!stopping && static_cast<int64_t>(queue.size()) < options.max_batch_requests &&
             Clock::now() < deadline)
        cv.wait_until(lock, deadline);
      SubNet subnet;
      const auto batch = take_batch(&subnet);
      int64_t rows = 0, len = 0;
      for (const auto& j : batch) {
        rows += static_cast<int64_t>(j->encodings.size());
        len = std::max(len, j->max_len);
      }
      const infer::SubnetProfile* running = profile.find(subnet);
      busy_until = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(
                                      running ? running->predict_ms({rows, len}) * 1000.0 : 0.0));
      lock.unlock();
      run_batch(batch, subnet);
      lock.lock();
    }
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  void count(const std::string& endpoint, int status) {
    std::lock_guard<std::mutex> lock(metrics_mu);
    ++requests[{endpoint, status}];
  }

  static void error(httplib::Response& res, int status, const std::string& message) {
    const char* type = status == 429   ? "Overloaded"
                       : status == 413 ? "PayloadTooLarge"
                       : status == 422 ? "Validation"
                       : status == 400 ? "BadRequest"
                       : status == 503 ? "Unavailable"
                                       : "Backend";
    res.status = status;
    res.set_content(json_text(json{{"error", message}, {"error_type", type}}), "application/json");
  }

  std::vector<Encoding> encode(const Request& r, int64_t* max_len) const {
    std::vector<Encoding> out;
    const bool truncate = r.truncate.value_or(options.truncate);
    *max_len = 0;
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      const TextInput& in = r.inputs[i];
      Encoding e =
          tokenizer.encode(in.text, in.pair, EncodeOptions{std::nullopt, Truncation::kNone});
      if (static_cast<int64_t>(e.input_ids.size()) > max_length) {
        if (!truncate)
          throw RequestError(422, cat("inputs[", i, "]: ", e.input_ids.size(),
                                      " tokens, more than the model's limit of ", max_length,
                                      " (send \"truncate\": true to truncate)"));
        e = tokenizer.encode(in.text, in.pair,
                             EncodeOptions{max_length, Truncation::kLongestFirst});
      }
      *max_len = std::max<int64_t>(*max_len, static_cast<int64_t>(e.input_ids.size()));
      out.push_back(std::move(e));
    }
    return out;
  }

  json predictions(const Request& r, const at::Tensor& logits) const {
    const BertConfig& c = model->config();
    json out = json::array();
    const bool multi = c.problem_type == "multi_label_classification";
    const at::Tensor scores = r.raw_scores || c.is_regression() ? logits
                              : multi                           ? at::sigmoid(logits)
                                                                : at::softmax(logits, -1);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      if (c.is_regression()) {
        out.push_back({{"score", scores[i][0].item<double>()}});
        continue;
      }
      json all = json::object();
      for (int64_t k = 0; k < c.num_labels(); ++k)
        all[c.label_name(k)] = scores[i][k].item<double>();
      const int64_t top = scores[i].argmax().item<int64_t>();
      out.push_back({{"label", c.label_name(top)},
                     {"score", scores[i][top].item<double>()},
                     {r.raw_scores ? "logits" : "probs", all}});
    }
    return out;
  }

  static json vectors(const at::Tensor& t) {
    json out = json::array();
    const at::Tensor c = t.contiguous().to(at::kFloat);
    for (int64_t i = 0; i < c.size(0); ++i) {
      const float* p = c[i].data_ptr<float>();
      out.push_back(std::vector<float>(p, p + c.size(1)));
    }
    return out;
  }

  json subnet_json(const SubNet& s) const {
    const BertConfig& c = model->config();
    return {{"name", subnet_name(s)},
            {"width", s.width},
            {"depth", s.depth},
            {"layers", static_cast<int64_t>(kept_layers(c.num_hidden_layers, s.depth).size())},
            {"heads", layer_shape(c, 0, s.width).heads}};
  }

  // Every request once, with the status it got (the library's own 404 / 413 included).
  void log(const httplib::Request& req, const httplib::Response& res) {
    static const std::set<std::string> known = {"/predict", "/embed", "/tokenize", "/v1/embeddings",
                                                "/health",  "/info",  "/metrics"};
    count(known.count(req.path) ? req.path.substr(1) : "other", res.status);
    if (options.quiet) return;
    auto header = [&](const char* name) { return res.get_header_value(name); };
    if (options.log_json) {
      json j = {{"method", req.method}, {"path", req.path}, {"status", res.status}};
      for (const char* h : {"x-subnet", "x-batch-size", "x-queue-time", "x-tokenization-time",
                            "x-inference-time", "x-total-time"})
        if (res.has_header(h)) j[std::string(h).substr(2)] = header(h);
      std::fprintf(stderr, "%s\n", json_text(j).c_str());
    } else {
      std::string line = cat("serve: ", res.status, " ", req.method, " ", req.path);
      if (res.has_header("x-subnet"))
        line += cat(" ", header("x-subnet"), " batch ", header("x-batch-size"), " queue ",
                    header("x-queue-time"), " ms, tokenization ", header("x-tokenization-time"),
                    " ms, inference ", header("x-inference-time"), " ms, total ",
                    header("x-total-time"), " ms");
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const Clock::time_point arrived = Clock::now();
    try {
      Request r = parse_request(endpoint, req.body,
                                RequestLimits{options.max_client_batch, options.max_body_bytes});
      if (endpoint == Endpoint::kTokenize) {
        json out = json::array();
        for (const TextInput& in : r.inputs) {
          EncodeOptions eo{max_length, Truncation::kLongestFirst};
          eo.add_special_tokens = r.add_special_tokens;
          if (!r.truncate.value_or(options.truncate)) eo.truncation = Truncation::kNone;
          const Encoding e = tokenizer.encode(in.text, in.pair, eo);
          out.push_back(
              {{"ids", e.input_ids}, {"tokens", e.tokens}, {"type_ids", e.token_type_ids}});
        }
        res.set_content(json_text(json{{"tokens", out}}), "application/json");
        return;
      }
      if (endpoint == Endpoint::kPredict && !model->has_classifier())
        throw RequestError(422, "this model has no classification head: use /embed");
      auto job = std::make_shared<Job>();
      if (!r.latency_budget_ms) {
        job->fixed = SubNet{r.width.value_or(1.0), r.depth.value_or(1.0)};
        if (!model->supports(*job->fixed))
          throw RequestError(422, cat("sub-network ", subnet_name(*job->fixed),
                                      " is not available: this int8 server packed the widths of "
                                      "its profile only"));
      }
      job->encodings = encode(r, &job->max_len);
      const Clock::time_point tokenized = Clock::now();
      job->request = std::move(r);
      job->arrived = arrived;
      std::future<Result> done = job->done.get_future();
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) throw RequestError(503, "the server is shutting down");
        if (static_cast<int64_t>(queue.size()) >= options.max_queue)
          throw RequestError(429, cat("the queue is full (", options.max_queue,
                                      " requests waiting, --max-queue): retry later"));
        if (job->request.latency_budget_ms && options.shed_load) {
          // Work ahead of this request, at the fastest sub-network: a lower bound of its wait.
          double ahead = busy_until > Clock::now() ? ms_between(Clock::now(), busy_until) : 0.0;
          for (const auto& q : queue) ahead += fastest_ms(*q);
          const double left = *job->request.latency_budget_ms - ms_between(arrived, Clock::now());
          if (ahead + fastest_ms(*job) > left) {
            ++budget_shed;
            throw RequestError(
                429, cat("the latency budget of ", *job->request.latency_budget_ms,
                         " ms cannot be met: about ", std::lround(ahead),
                         " ms of work is queued ahead even at the fastest sub-network; retry "
                         "later"));
          }
        }
        queue.push_back(job);
      }
      cv.notify_one();
      Result result = done.get();
      if (!result.error.empty()) throw std::runtime_error(result.error);
      const Clock::time_point end = Clock::now();
      const Request& q = job->request;
      json body;
      if (endpoint == Endpoint::kPredict) {
        body = {{"predictions", predictions(q, result.logits)}};
      } else if (endpoint == Endpoint::kEmbed) {
        body = {{"embeddings", vectors(result.embeddings)}};
      } else {
        json data = json::array();
        const json v = vectors(result.embeddings);
        int64_t tokens = 0;
        for (const Encoding& e : job->encodings) tokens += static_cast<int64_t>(e.input_ids.size());
        for (size_t i = 0; i < v.size(); ++i)
          data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", v[i]}});
        body = {{"object", "list"},
                {"data", data},
                {"model", q.model.empty() ? model->dir() : q.model},
                {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
      }
      body["subnet"] = subnet_json(result.subnet);
      const double tokenize_ms = ms_between(arrived, tokenized),
                   total_ms = ms_between(arrived, end);
      if (q.latency_budget_ms) {
        body["latency_budget_ms"] = *q.latency_budget_ms;
        body["budget_met"] = total_ms <= *q.latency_budget_ms;
      }
      if (q.replaced_utf8) body["replaced_invalid_utf8"] = q.replaced_utf8;
      res.set_content(json_text(body), "application/json");
      auto fmt = [](double ms) { return cat(std::round(ms * 1000.0) / 1000.0); };
      res.set_header("x-subnet", subnet_name(result.subnet));
      res.set_header("x-batch-size", std::to_string(result.batch_rows));
      res.set_header("x-queue-time", fmt(result.queue_ms - tokenize_ms));
      res.set_header("x-tokenization-time", fmt(tokenize_ms));
      res.set_header("x-inference-time", fmt(result.inference_ms));
      res.set_header("x-total-time", fmt(total_ms));
      {
        std::lock_guard<std::mutex> lock(metrics_mu);
        stage_ms.at("queue").add(result.queue_ms - tokenize_ms);
        stage_ms.at("tokenization").add(tokenize_ms);
        stage_ms.at("inference").add(result.inference_ms);
        stage_ms.at("total").add(total_ms);
        if (q.latency_budget_ms) {
          ++budget_requests;
          budget_met += total_ms <= *q.latency_budget_ms;
        }
      }
    } catch (const RequestError& e) {
      error(res, e.status(), e.what());
    } catch (const InputError& e) {
      error(res, 422, e.what());
    } catch (const std::exception& e) {
      error(res, 500, cat("internal error: ", e.what()));
    }
  }

  std::string metrics_text() {
    std::ostringstream out;
    size_t waiting;
    {
      std::lock_guard<std::mutex> lock(mu);
      waiting = queue.size();
    }
    std::lock_guard<std::mutex> lock(metrics_mu);
    out << "# HELP slimbert_requests_total Requests by endpoint and HTTP status.\n"
        << "# TYPE slimbert_requests_total counter\n";
    for (const auto& [key, n] : requests)
      out << "slimbert_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second
          << "\"} " << n << "\n";
    out << "# HELP slimbert_queue_size Requests waiting for the model.\n"
        << "# TYPE slimbert_queue_size gauge\nslimbert_queue_size " << waiting << "\n";
    out << "# HELP slimbert_batch_size Texts per forward batch.\n"
        << "# TYPE slimbert_batch_size histogram\n";
    batch_size.write(out, "slimbert_batch_size", "");
    out << "# HELP slimbert_stage_duration_ms Time per request stage.\n"
        << "# TYPE slimbert_stage_duration_ms histogram\n";
    for (const auto& [stage, h] : stage_ms)
      h.write(out, "slimbert_stage_duration_ms", "stage=\"" + stage + "\"");
    out << "# HELP slimbert_subnet_chosen_total Requests run by each sub-network.\n"
        << "# TYPE slimbert_subnet_chosen_total counter\n";
    for (const auto& [s, n] : subnet_chosen)
      out << "slimbert_subnet_chosen_total{subnet=\"" << s << "\"} " << n << "\n";
    out << "# HELP slimbert_budget_requests_total Requests with a latency budget, and those "
           "answered within it.\n# TYPE slimbert_budget_requests_total counter\n"
        << "slimbert_budget_requests_total " << budget_requests << "\n"
        << "# HELP slimbert_budget_shed_total Requests answered 429 at once because their budget "
           "could not be met.\n# TYPE slimbert_budget_shed_total counter\n"
        << "slimbert_budget_shed_total " << budget_shed.load() << "\n"
        << "# TYPE slimbert_budget_met_total counter\nslimbert_budget_met_total " << budget_met
        << "\n";
    return out.str();
  }

  json info() const {
    const BertConfig& c = model->config();
    json subs = json::array();
    for (const infer::SubnetProfile& p : profile.subnets) {
      json s = subnet_json(p.subnet);
      s["latency_ms_batch1_seq128"] = p.predict_ms({1, std::min<int64_t>(128, max_length)});
      s["gflops"] = p.gflops;
      if (p.score) s["dev_score"] = *p.score;
      subs.push_back(s);
    }
    return {{"model_id", model->dir()},
            {"model_type", c.model_type},
            {"int8", model->int8()},
            {"gemm", model->engine_name()},
            {"hidden_size", c.hidden_size},
            {"layers", c.num_hidden_layers},
            {"labels", model->has_classifier() ? c.num_labels() : 0},
            {"max_input_length", max_length},
            {"max_batch_tokens", options.max_batch_tokens},
            {"max_batch_requests", options.max_batch_requests},
            {"max_client_batch_size", options.max_client_batch},
            {"max_queue", options.max_queue},
            {"subnets", subs},
            {"profile", profile.created}};
  }

  void routes() {
    for (Endpoint e :
         {Endpoint::kPredict, Endpoint::kEmbed, Endpoint::kTokenize, Endpoint::kOpenAIEmbeddings})
      http.Post(
          std::string("/") + endpoint_name(e),
          [this, e](const httplib::Request& req, httplib::Response& res) { handle(e, req, res); });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      bool down;
      {
        std::lock_guard<std::mutex> lock(mu);
        down = stopping;
      }
      if (down) return error(res, 503, "shutting down");
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    http.Get("/info", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json_text(info(), 2), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    // Statuses the library sets itself (404, 405, 413 for a body over the limit, 400) get a
    // JSON body too.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (res.status == 413) {
            error(res, 413,
                  cat("request body over the limit of ", options.max_body_bytes,
                      " bytes (--max-body-bytes)"));
          } else if (res.body.empty()) {
            error(res, res.status,
                  cat(res.status == 404 ? "no such endpoint" : "request refused", ": ", req.method,
                      " ", excerpt(req.path, 100)));
          }
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                  std::exception_ptr) { error(res, 500, "internal error"); });
    http.set_logger(
        [this](const httplib::Request& req, const httplib::Response& res) { log(req, res); });
    http.set_payload_max_length(options.max_body_bytes);
    http.set_read_timeout(options.timeout_s, 0);
    http.set_write_timeout(options.timeout_s, 0);
    http.set_keep_alive_timeout(std::max(1, options.timeout_s / 2));
    // A response goes out in two writes (headers, body). With Nagle's algorithm the second waits
    // for the client's ACK of the first, which a client delays by up to 40 ms: on a kept-alive
    // connection (what pooled HTTP clients use) every answer took 40+ ms.
    http.set_tcp_nodelay(true);
    const int threads = options.http_threads;
    http.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
  }
};

Server::Server(std::shared_ptr<const infer::InferenceModel> model, Tokenizer tokenizer,
               infer::LatencyProfile profile, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(tokenizer), std::move(profile),
                                   std::move(options))) {
  if (impl_->options.max_batch_requests < 1 || impl_->options.max_batch_tokens < 1 ||
      impl_->options.max_queue < 1 || impl_->options.http_threads < 1)
    fail("serve: batch, queue and thread limits must be positive");
  impl_->routes();
  // One pass per sub-network at a short and a long sequence before the first request: a shape's
  // first pass pays for thread start-up, heap growth and oneDNN's kernel creation, which budgets
  // planned on warm timings do not cover.
  const int64_t max_length = impl_->max_length;
  for (const infer::SubnetProfile& p : impl_->profile.subnets)
    for (int64_t len : {std::min<int64_t>(16, max_length), std::min<int64_t>(128, max_length)})
      infer::measure_latency(*impl_->model, 1, len, p.subnet, 1, 0);
}

Server::~Server() {
  stop();
  if (impl_->worker.joinable()) impl_->worker.join();
}

int Server::bind() {
  Impl& s = *impl_;
  if (s.options.port == 0) {
    s.port = s.http.bind_to_any_port(s.options.host);
    if (s.port < 0) fail("serve: cannot bind ", s.options.host, " to any port");
  } else {
    if (!s.http.bind_to_port(s.options.host, s.options.port))
      fail("serve: cannot bind ", s.options.host, ":", s.options.port,
           " (address in use, or not an address of this machine)");
    s.port = s.options.port;
  }
  return s.port;
}

void Server::run() {
  Impl& s = *impl_;
  if (s.port == 0) bind();
  // One pass per sub-network first: the first passes pay for thread pools, allocations and
  // oneDNN's kernel generation, which a request's budget should not.
  for (const infer::SubnetProfile& p : s.profile.subnets)
    if (s.model->supports(p.subnet))
      infer::measure_latency(*s.model, 1, std::min<int64_t>(16, s.max_length), p.subnet, 1, 1);
  s.worker = std::thread([&s] { s.work(); });
  s.http.listen_after_bind();  // returns after stop(), its handlers finished
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  s.worker.join();
}

void Server::stop() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  s.http.stop();
}

}  // namespace slimbert::serve
