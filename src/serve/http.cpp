// The server's HTTP room: routes, request parsing (request.cpp), errors, response bodies and the
// request log. Inference requests are tokenized here and handed to the batcher (batcher.cpp);
// counts and times go to the metrics (metrics.cpp).
#include <ATen/ATen.h>
#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"
#include "slimbert/infer/run.h"
#include "slimbert/serve/batcher.h"
#include "slimbert/serve/metrics.h"
#include "slimbert/serve/request.h"
#include "slimbert/serve/server.h"

namespace slimbert::serve {

using nlohmann::json;

namespace {

const char* error_type(int status) {
  return status == 429   ? "Overloaded"
         : status == 413 ? "PayloadTooLarge"
         : status == 422 ? "Validation"
         : status == 400 ? "BadRequest"
         : status == 503 ? "Unavailable"
                         : "Backend";
}

void error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json_text(json{{"error", message}, {"error_type", error_type(status)}}),
                  "application/json");
}

json vectors(const at::Tensor& t) {
  json out = json::array();
  const at::Tensor c = t.contiguous().to(at::kFloat);
  for (int64_t i = 0; i < c.size(0); ++i) {
    const float* p = c[i].data_ptr<float>();
    out.push_back(std::vector<float>(p, p + c.size(1)));
  }
  return out;
}

std::string milliseconds(double ms) {
  return cat(std::round(ms * 1000.0) / 1000.0);
}

}  // namespace

struct Server::Impl {
  std::shared_ptr<const infer::InferenceModel> model;
  Tokenizer tokenizer;
  infer::LatencyProfile profile;
  ServerOptions options;
  int64_t max_length = 0;
  httplib::Server http;
  int port = 0;
  Metrics metrics;
  Batcher batcher;

  Impl(std::shared_ptr<const infer::InferenceModel> m, Tokenizer t, infer::LatencyProfile p,
       ServerOptions o)
      : model(std::move(m)),
        tokenizer(std::move(t)),
        profile(std::move(p)),
        options(std::move(o)),
        max_length(infer::max_input_length(model->config(), tokenizer, options.max_length)),
        batcher(model, profile,
                {options.max_batch_tokens, options.max_batch_requests, options.max_wait_ms,
                 options.max_queue, options.shed_load},
                tokenizer.pad_id(), metrics) {
    if (options.http_threads < 1) fail("serve: batch, queue and thread limits must be positive");
    infer::parse_pooling(options.pooling);
  }

  json predictions(const Request& r, const at::Tensor& logits) const {
    const BertConfig& c = model->config();
    json out = json::array();
    const at::Tensor scores = infer::label_scores(c, logits, r.raw_scores);
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

  json subnet_json(const SubNet& s) const {
    const BertConfig& c = model->config();
    return {{"name", subnet_name(s)},
            {"width", s.width},
            {"depth", s.depth},
            {"layers", static_cast<int64_t>(kept_layers(c.num_hidden_layers, s.depth).size())},
            {"heads", layer_shape(c, 0, s.width).heads}};
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

  // Every request once, with the status it got (the library's own 404 / 413 included).
  void log(const httplib::Request& req, const httplib::Response& res) {
    static const std::set<std::string> known = {"/predict", "/embed", "/tokenize", "/v1/embeddings",
                                                "/health",  "/info",  "/metrics"};
    metrics.count(known.count(req.path) ? req.path.substr(1) : "other", res.status);
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

  json tokenize(const Request& r) const {
    json out = json::array();
    for (const TextInput& in : r.inputs) {
      EncodeOptions eo{max_length, Truncation::kLongestFirst};
      eo.add_special_tokens = r.add_special_tokens;
      if (!r.truncate.value_or(options.truncate)) eo.truncation = Truncation::kNone;
      const Encoding e = tokenizer.encode(in.text, in.pair, eo);
      out.push_back({{"ids", e.input_ids}, {"tokens", e.tokens}, {"type_ids", e.token_type_ids}});
    }
    return {{"tokens", out}};
  }

  // The request's texts tokenized; a text over the limit is truncated, or refused (422) when the
  // request (or the server) does not truncate.
  std::vector<Encoding> encode(const Request& r) const {
    std::vector<Encoding> out;
    const bool truncate = r.truncate.value_or(options.truncate);
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      const TextInput& in = r.inputs[i];
      infer::FittedEncoding e =
          infer::encode_within(tokenizer, in.text, in.pair, max_length, truncate);
      if (e.tokens > max_length && !truncate)
        throw RequestError(
            422, cat("inputs[", i, "]: ", e.tokens, " tokens, more than the model's limit of ",
                     max_length, " (send \"truncate\": true to truncate)"));
      out.push_back(std::move(e.encoding));
    }
    return out;
  }

  // The answer's body from the model's outputs for this request.
  json inference_body(Endpoint endpoint, const Request& q, const BatchResult& result,
                      const std::vector<Encoding>& encodings) const {
    if (endpoint == Endpoint::kPredict) return {{"predictions", predictions(q, result.logits)}};
    const bool mean = q.pooling.value_or(options.pooling) == "mean";
    at::Tensor v = mean ? result.mean : result.cls;
    if (q.normalize) v = infer::normalize(v);
    if (endpoint == Endpoint::kEmbed) return {{"embeddings", vectors(v)}};
    json data = json::array();
    const json rows = vectors(v);
    int64_t tokens = 0;
    for (const Encoding& e : encodings) tokens += static_cast<int64_t>(e.input_ids.size());
    for (size_t i = 0; i < rows.size(); ++i)
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", rows[i]}});
    return {{"object", "list"},
            {"data", data},
            {"model", q.model.empty() ? model->dir() : q.model},
            {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
  }

  void infer(Endpoint endpoint, Request r, Clock::time_point arrived, httplib::Response& res) {
    if (endpoint == Endpoint::kPredict && !model->has_classifier())
      throw RequestError(422, "this model has no classification head: use /embed");
    auto job = std::make_shared<Job>();
    if (r.latency_budget_ms) {
      job->budget_ms = r.latency_budget_ms;
    } else {
      job->fixed = SubNet{r.width.value_or(1.0), r.depth.value_or(1.0)};
      if (!model->supports(*job->fixed))
        throw RequestError(422, cat("sub-network ", subnet_name(*job->fixed),
                                    " is not available: this int8 server packed the widths of "
                                    "its profile only"));
    }
    job->encodings = encode(r);
    for (const Encoding& e : job->encodings)
      job->max_len = std::max<int64_t>(job->max_len, static_cast<int64_t>(e.input_ids.size()));
    const Clock::time_point tokenized = Clock::now();
    job->arrived = arrived;
    const BatchResult result = batcher.submit(job).get();
    if (!result.error.empty()) throw std::runtime_error(result.error);
    const Clock::time_point end = Clock::now();
    json body = inference_body(endpoint, r, result, job->encodings);
    body["subnet"] = subnet_json(result.subnet);
    RequestTimes t;
    t.tokenization_ms = ms_between(arrived, tokenized);
    t.total_ms = ms_between(arrived, end);
    t.queue_ms = result.queue_ms - t.tokenization_ms;
    t.inference_ms = result.inference_ms;
    if (r.latency_budget_ms) {
      body["latency_budget_ms"] = *r.latency_budget_ms;
      body["budget_met"] = t.total_ms <= *r.latency_budget_ms;
    }
    if (r.replaced_utf8) body["replaced_invalid_utf8"] = r.replaced_utf8;
    res.set_content(json_text(body), "application/json");
    res.set_header("x-subnet", subnet_name(result.subnet));
    res.set_header("x-batch-size", std::to_string(result.batch_rows));
    res.set_header("x-queue-time", milliseconds(t.queue_ms));
    res.set_header("x-tokenization-time", milliseconds(t.tokenization_ms));
    res.set_header("x-inference-time", milliseconds(t.inference_ms));
    res.set_header("x-total-time", milliseconds(t.total_ms));
    metrics.request(t, r.latency_budget_ms.value_or(0.0));
  }

  // A refused request gets its status; anything else that fails is the server's fault (500).
  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const Clock::time_point arrived = Clock::now();
    try {
      Request r = parse_request(endpoint, req.body,
                                RequestLimits{options.max_client_batch, options.max_body_bytes});
      if (endpoint == Endpoint::kTokenize)
        res.set_content(json_text(tokenize(r)), "application/json");
      else
        infer(endpoint, std::move(r), arrived, res);
    } catch (const RequestError& e) {
      error(res, e.status(), e.what());
    } catch (const std::exception& e) {
      error(res, 500, cat("internal error: ", e.what()));
    }
  }

  void routes() {
    for (Endpoint e :
         {Endpoint::kPredict, Endpoint::kEmbed, Endpoint::kTokenize, Endpoint::kOpenAIEmbeddings})
      http.Post(
          std::string("/") + endpoint_name(e),
          [this, e](const httplib::Request& req, httplib::Response& res) { handle(e, req, res); });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (batcher.stopping()) return error(res, 503, "shutting down");
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    http.Get("/info", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json_text(info(), 2), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.text(batcher.queued()), "text/plain; version=0.0.4");
    });
    // Statuses the library sets itself (404, 405, 413 for a body over the limit, 400) get a
    // JSON body too. It calls this for every status from 400 on, ours included: an answer that
    // already has its body (a 413 for too many inputs) keeps it.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Handled;
          if (res.status == 413) {
            error(res, 413,
                  cat("request body over the limit of ", options.max_body_bytes,
                      " bytes (--max-body-bytes)"));
          } else {
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
  impl_->routes();
  impl_->batcher.warm_up(impl_->max_length);
}

Server::~Server() {
  stop();
  impl_->batcher.stop();
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
  s.batcher.start();
  s.http.listen_after_bind();  // returns after stop(), its handlers finished
  s.batcher.stop();
}

void Server::stop() {
  impl_->batcher.close();
  impl_->http.stop();
}

}  // namespace slimbert::serve
