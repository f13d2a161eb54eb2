// The server's HTTP room: routes, request parsing (request.cpp), errors, response bodies, access
// control and the request log. Bodies are exactly text-embeddings-inference's (TEI 1.9) and
// OpenAI's; what slimbert adds (the sub-network chosen, budgets, timings) goes in headers.
// Inference requests are tokenized here and handed to the batcher (batcher.cpp); counts and
// times go to the metrics (metrics.cpp).
#include <ATen/ATen.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"
#include "slimbert/infer/run.h"
#include "slimbert/infer/sentence_transformers.h"
#include "slimbert/serve/batcher.h"
#include "slimbert/serve/metrics.h"
#include "slimbert/serve/request.h"
#include "slimbert/serve/server.h"

namespace slimbert::serve {

using nlohmann::json;

namespace {

constexpr const char* kVersion = "1.9.3";  // the TEI API version whose bodies these are

// TEI's error body; /v1/embeddings has OpenAI's field names and the status as `code`.
void error(httplib::Response& res, int status, ErrorType type, const std::string& message,
           bool openai = false) {
  res.status = status;
  const json body =
      openai ? json{{"message", message}, {"code", status}, {"error_type", error_type_name(type)}}
             : json{{"error", message}, {"error_type", error_type_name(type)}};
  res.set_content(json_text(body), "application/json");
}

json rows_json(const at::Tensor& t) {
  json out = json::array();
  const at::Tensor c = t.contiguous().to(at::kFloat);
  for (int64_t i = 0; i < c.size(0); ++i) {
    const float* p = c[i].data_ptr<float>();
    out.push_back(std::vector<float>(p, p + c.size(1)));
  }
  return out;
}

// OpenAI's base64 embedding: the float32 values' little-endian bytes.
std::string base64_floats(const at::Tensor& row) {
  const at::Tensor c = row.contiguous().to(at::kFloat);
  static_assert(sizeof(float) == 4, "float32");
  const std::string bytes(reinterpret_cast<const char*>(c.data_ptr<float>()),
                          static_cast<size_t>(c.numel()) * 4);
  static const char* const kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::string milliseconds(double ms) {
  return cat(std::round(ms * 1000.0) / 1000.0);
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ",") + s;
  return out;
}

// Comparison time independent of where the strings first differ.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// Threads for connections, started when every one is busy: an idle kept-alive connection or a
// slow client holds its own thread, never one another connection waits for.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_(max_threads) {}
  // Connections being served now.
  size_t running() const {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_.size() - idle_;
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(fn));
      if (jobs_.size() > idle_ && threads_.size() < max_) threads_.emplace_back([this] { work(); });
    }
    cv_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  size_t max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace

struct Server::Impl {
  std::shared_ptr<const infer::InferenceModel> model;
  Tokenizer tokenizer;
  infer::LatencyProfile profile;
  ServerOptions options;
  // A sentence-transformers directory's pooling, length and prompts are the defaults.
  infer::SentenceTransformer st;
  int64_t max_length = 0;
  infer::Pooling pooling;
  httplib::Server http;
  ConnectionThreads* connections = nullptr;  // owned by `http`
  int port = 0;
  Metrics metrics;
  Batcher batcher;

  Impl(std::shared_ptr<const infer::InferenceModel> m, Tokenizer t, infer::LatencyProfile p,
       ServerOptions o)
      : model(std::move(m)),
        tokenizer(std::move(t)),
        profile(std::move(p)),
        options(std::move(o)),
        st(infer::read_sentence_transformer(model->dir())),
        max_length(infer::max_input_length(
            model->config(), tokenizer,
            options.max_length > 0 ? options.max_length : st.max_seq_length.value_or(0))),
        pooling(options.pooling.empty() ? st.pooling.value_or(infer::Pooling::kCls)
                                        : infer::parse_pooling(options.pooling)),
        batcher(model, profile,
                {options.max_batch_tokens, options.max_batch_requests, options.max_wait_ms,
                 options.max_queue, options.shed_load},
                tokenizer.pad_id(), metrics) {
    if (options.max_connections < 1 || options.timeout_s < 1)
      fail("serve: connection limits and timeouts must be positive");
    if (options.served_model_name.empty()) options.served_model_name = model->dir();
  }

  // A cross-encoder: a classifier with one output, which /rerank reads through a sigmoid.
  bool is_reranker() const { return model->has_classifier() && model->config().num_labels() == 1; }

  json model_type() const {
    const BertConfig& c = model->config();
    if (!model->has_classifier())
      return {{"embedding", {{"pooling", infer::pooling_name(pooling)}}}};
    json id2label = json::object(), label2id = json::object();
    for (int64_t k = 0; k < c.num_labels(); ++k) {
      id2label[std::to_string(k)] = c.label_name(k);
      label2id[c.label_name(k)] = k;
    }
    json type = json::object();
    type[is_reranker() ? "reranker" : "classifier"] = {{"id2label", id2label},
                                                       {"label2id", label2id}};
    return type;
  }

  json subnet_json(const SubNet& s) const {
    const BertConfig& c = model->config();
    return {{"name", subnet_name(s)},
            {"width", s.width},
            {"depth", s.depth},
            {"layers", static_cast<int64_t>(kept_layers(c.num_hidden_layers, s.depth).size())},
            {"heads", layer_shape(c, 0, s.width).heads}};
  }

  // TEI's Info, and slimbert's own description under "slimbert".
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
            {"model_sha", nullptr},
            {"model_dtype", model->int8() ? "int8" : "float32"},
            {"model_type", model_type()},
            {"max_concurrent_requests", options.max_queue},
            {"max_input_length", max_length},
            {"max_batch_tokens", options.max_batch_tokens},
            {"max_batch_requests", options.max_batch_requests},
            {"max_client_batch_size", options.max_client_batch},
            {"auto_truncate", options.truncate},
            {"tokenization_workers", options.max_connections},
            {"version", kVersion},
            {"sha", nullptr},
            {"docker_label", nullptr},
            {"served_model_name", options.served_model_name},
            {"slimbert",
             {{"engine", model->engine_name()},
              {"model_type", c.model_type},
              {"hidden_size", c.hidden_size},
              {"layers", c.num_hidden_layers},
              {"has_mlm_head", model->has_mlm()},
              {"subnets", subs},
              {"profile", profile.created}}}};
  }

  json models() const {
    json data = json::array();
    data.push_back({{"id", options.served_model_name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "slimbert"}});
    for (const infer::SubnetProfile& p : profile.subnets)
      data.push_back({{"id", subnet_name(p.subnet)},
                      {"object", "model"},
                      {"created", 0},
                      {"owned_by", "slimbert"},
                      {"parent", options.served_model_name},
                      {"width", p.subnet.width},
                      {"depth", p.subnet.depth}});
    return {{"object", "list"}, {"data", data}};
  }

  // Every request once, with the status it got (the library's own 404 / 413 included).
  void log(const httplib::Request& req, const httplib::Response& res) {
    static const std::set<std::string> known = [] {
      std::set<std::string> k = {"/health", "/info", "/metrics", "/v1/models"};
      for (Endpoint e : all_endpoints()) k.insert(std::string("/") + endpoint_name(e));
      return k;
    }();
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

  // The prompt a request's texts get: its prompt_name's, else the model's default prompt.
  std::string prompt(const Request& r) const {
    const std::optional<std::string> name = r.prompt_name ? r.prompt_name : st.default_prompt_name;
    if (!name) return "";
    auto it = st.prompts.find(*name);
    if (it == st.prompts.end()) {
      std::vector<std::string> names;
      for (const auto& [known, text] : st.prompts) names.push_back(known);
      throw RequestError(422, st.prompts.empty()
                                  ? cat("prompt_name '", *name,
                                        "': this model has no prompts "
                                        "(config_sentence_transformers.json)")
                                  : cat("prompt_name '", *name,
                                        "' is not one of the model's prompts: ", joined(names)));
    }
    return it->second;
  }

  // TEI's token objects: special tokens carry no offsets; the others their bytes of the text.
  json tokenize(const Request& r) const {
    json out = json::array();
    const std::string pre = prompt(r);
    for (const TextInput& in : r.inputs) {
      const std::string text = pre + in.text;
      json tokens = json::array();
      for (const TokenSpan& t : tokenizer.spans(text, r.add_special_tokens)) {
        json tok = {{"id", t.id}, {"special", t.special}};
        if (t.bytes) {
          tok["text"] = text.substr(t.bytes->first, t.bytes->second - t.bytes->first);
          tok["start"] = t.bytes->first;
          tok["stop"] = t.bytes->second;
        } else {
          tok["text"] = t.token;
          tok["start"] = nullptr;
          tok["stop"] = nullptr;
        }
        tokens.push_back(tok);
      }
      out.push_back(tokens);
    }
    return out;
  }

  void check_ids(const std::vector<int64_t>& ids, const std::string& field) const {
    const int64_t vocab = std::min(tokenizer.vocab().size(), model->config().vocab_size);
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= vocab)
        throw RequestError(422, cat(field, "[", i, "]: token id ", ids[i],
                                    " is outside the vocabulary of ", vocab));
  }

  json decode(const Request& r) const {
    json out = json::array();
    for (size_t i = 0; i < r.ids.size(); ++i) {
      check_ids(r.ids[i], r.ids.size() == 1 ? "ids" : cat("ids[", i, "]"));
      out.push_back(tokenizer.decode(r.ids[i], r.skip_special_tokens));
    }
    return out;
  }

  // The request's inputs as encodings: texts tokenized (with the prompt), token ids taken as
  // they are. An input over the limit is truncated from the chosen side, or refused (413) when
  // the request (or the server) does not truncate.
  std::vector<Encoding> encode(const Request& r) const {
    std::vector<Encoding> out;
    const bool truncate = r.truncate.value_or(options.truncate);
    const TruncationSide side = r.truncate_left ? TruncationSide::kLeft : TruncationSide::kRight;
    const std::string pre = prompt(r);
    const int64_t pool_from = infer::prompt_pool_from(tokenizer, pre, st.include_prompt);
    const std::string field = r.endpoint == Endpoint::kOpenAIEmbeddings ? "input" : "inputs";
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      const TextInput& in = r.inputs[i];
      Encoding e;
      int64_t tokens = 0;
      if (in.ids) {
        check_ids(*in.ids, cat(field, "[", i, "]"));
        std::vector<int64_t> ids = *in.ids;
        tokens = static_cast<int64_t>(ids.size());
        if (tokens > max_length && truncate)
          ids = side == TruncationSide::kLeft
                    ? std::vector<int64_t>(ids.end() - max_length, ids.end())
                    : std::vector<int64_t>(ids.begin(), ids.begin() + max_length);
        for (int64_t id : ids) e.tokens.push_back(tokenizer.vocab().token(id));
        e.input_ids = ids;
        e.token_type_ids.assign(ids.size(), 0);
        e.attention_mask.assign(ids.size(), 1);
      } else {
        infer::FittedEncoding f =
            infer::encode_within(tokenizer, pre + in.text, in.pair, max_length, truncate, side);
        tokens = f.tokens;
        e = std::move(f.encoding);
        e.pool_from = pool_from;
      }
      if (tokens > max_length && !truncate)
        throw RequestError(
            413, cat(field, "[", i, "]: ", tokens, " tokens, more than the model's limit of ",
                     max_length, " (send \"truncate\": true to truncate)"));
      out.push_back(std::move(e));
    }
    return out;
  }

  // The sub-network a request asked for: width/depth, an OpenAI `model` naming one of the
  // profile's sub-networks, or (unset) a latency budget.
  std::optional<SubNet> fixed_subnet(const Request& r) const {
    if (r.latency_budget_ms) return std::nullopt;
    SubNet s{r.width.value_or(1.0), r.depth.value_or(1.0)};
    if (!r.width && !r.depth && !r.model.empty())
      for (const infer::SubnetProfile& p : profile.subnets)
        if (subnet_name(p.subnet) == r.model) s = p.subnet;
    if (!model->supports(s))
      throw RequestError(422, cat("sub-network ", subnet_name(s),
                                  " is not available: this int8 server packed the widths of "
                                  "its profile only"));
    return s;
  }

  void check_model_serves(Endpoint endpoint) const {
    if (endpoint == Endpoint::kPredict && !model->has_classifier())
      throw RequestError(424, ErrorType::kBackend,
                         "model is not a classifier (no classification head): use /embed");
    if (endpoint == Endpoint::kRerank && !is_reranker())
      throw RequestError(
          424, ErrorType::kBackend,
          cat("model is not a re-ranker model: /rerank needs a classifier with one output (a "
              "cross-encoder); this model has ",
              model->has_classifier() ? cat(model->config().num_labels(), " labels")
                                      : std::string("no classification head")));
    if (endpoint == Endpoint::kEmbedSparse && !model->has_mlm())
      throw RequestError(424, ErrorType::kBackend,
                         "model has no masked-LM head (cls.predictions.*): /embed_sparse needs "
                         "one (a SPLADE model)");
  }

  // The request's pooling, else the server's.
  infer::Pooling pooling_of(const Request& r) const {
    return r.pooling ? infer::parse_pooling(*r.pooling) : pooling;
  }

  // Pooled sentence vectors: the request's (or the server's) pooling, the first `dimensions`
  // values kept, then scaled to unit length when asked.
  at::Tensor sentence_vectors(const Request& r, const BatchResult& result) const {
    at::Tensor v = result.rows.pooled(pooling_of(r));
    if (r.dimensions) v = v.narrow(1, 0, *r.dimensions);  // checked before the model ran
    return r.normalize ? infer::normalize(v) : v;
  }

  json predictions(const at::Tensor& scores) const {
    const BertConfig& c = model->config();
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t k = 0; k < scores.size(0); ++k) ranked.push_back({scores[k].item<double>(), k});
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    json out = json::array();
    for (const auto& [score, k] : ranked)
      out.push_back({{"score", score}, {"label", c.label_name(k)}});
    return out;
  }

  // The answer's body from the model's outputs for this request.
  json inference_body(const Request& r, const BatchResult& result,
                      const std::vector<Encoding>& encodings) const {
    switch (r.endpoint) {
      case Endpoint::kEmbed:
        return rows_json(sentence_vectors(r, result));
      case Endpoint::kEmbedAll: {
        json out = json::array();
        for (const at::Tensor& t : result.rows.tokens) out.push_back(rows_json(t));
        return out;
      }
      case Endpoint::kEmbedSparse: {
        json out = json::array();
        for (const at::Tensor& row : result.rows.sparse) {
          json values = json::array();
          const at::Tensor nz = row.nonzero().flatten();
          for (int64_t k = 0; k < nz.size(0); ++k) {
            const int64_t index = nz[k].item<int64_t>();
            values.push_back({{"index", index}, {"value", row[index].item<float>()}});
          }
          out.push_back(values);
        }
        return out;
      }
      case Endpoint::kPredict: {
        const at::Tensor scores =
            infer::label_scores(model->config(), result.rows.logits, r.raw_scores);
        if (r.single) return predictions(scores[0]);
        json out = json::array();
        for (int64_t i = 0; i < scores.size(0); ++i) out.push_back(predictions(scores[i]));
        return out;
      }
      case Endpoint::kRerank: {
        const at::Tensor logits = result.rows.logits.select(1, 0);
        const at::Tensor scores = r.raw_scores ? logits : at::sigmoid(logits);
        std::vector<std::pair<double, size_t>> ranked;
        for (size_t i = 0; i < r.inputs.size(); ++i)
          ranked.push_back({scores[static_cast<int64_t>(i)].item<double>(), i});
        std::stable_sort(ranked.begin(), ranked.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        json out = json::array();
        for (const auto& [score, i] : ranked) {
          json rank = {{"index", i}, {"score", score}};
          if (r.return_text) rank["text"] = *r.inputs[i].pair;
          out.push_back(rank);
        }
        return out;
      }
      case Endpoint::kSimilarity: {
        Request unit = r;
        unit.normalize = true;
        const at::Tensor v = sentence_vectors(unit, result);
        const at::Tensor cosines = at::mv(v.narrow(0, 1, v.size(0) - 1), v[0]);
        return std::vector<float>(cosines.data_ptr<float>(),
                                  cosines.data_ptr<float>() + cosines.numel());
      }
      case Endpoint::kOpenAIEmbeddings: {
        Request unit = r;
        unit.normalize = true;
        const at::Tensor v = sentence_vectors(unit, result);
        json data = json::array();
        for (int64_t i = 0; i < v.size(0); ++i)
          data.push_back({{"object", "embedding"},
                          {"embedding",
                           r.base64 ? json(base64_floats(v[i])) : rows_json(v[i].unsqueeze(0))[0]},
                          {"index", i}});
        int64_t tokens = 0;
        for (const Encoding& e : encodings) tokens += static_cast<int64_t>(e.input_ids.size());
        return {{"object", "list"},
                {"data", data},
                {"model", r.model.empty() ? options.served_model_name : r.model},
                {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
      }
      case Endpoint::kTokenize:
      case Endpoint::kDecode:
        break;
    }
    fail("serve: no inference body for /", endpoint_name(r.endpoint));
  }

  void infer(const Request& r, Clock::time_point arrived, httplib::Response& res) {
    check_model_serves(r.endpoint);
    if (r.dimensions && *r.dimensions > model->config().hidden_size)
      throw RequestError(422,
                         cat("field 'dimensions': ", *r.dimensions, " is more than the model's ",
                             model->config().hidden_size, " dimensions"));
    auto job = std::make_shared<Job>();
    job->fixed = fixed_subnet(r);
    if (!job->fixed) job->budget_ms = r.latency_budget_ms;
    if (r.endpoint == Endpoint::kEmbed || r.endpoint == Endpoint::kSimilarity ||
        r.endpoint == Endpoint::kOpenAIEmbeddings)
      job->wants.poolings = {pooling_of(r)};
    job->wants.tokens = r.endpoint == Endpoint::kEmbedAll;
    job->wants.sparse = r.endpoint == Endpoint::kEmbedSparse;
    job->encodings = encode(r);
    int64_t tokens = 0, characters = 0;
    for (const Encoding& e : job->encodings) {
      job->max_len = std::max<int64_t>(job->max_len, static_cast<int64_t>(e.input_ids.size()));
      tokens += static_cast<int64_t>(e.input_ids.size());
    }
    for (const TextInput& in : r.inputs)
      characters += static_cast<int64_t>(in.text.size() + (in.pair ? in.pair->size() : 0));
    const Clock::time_point tokenized = Clock::now();
    job->arrived = arrived;
    const BatchResult result = batcher.submit(job).get();
    if (!result.error.empty())
      throw RequestError(424, ErrorType::kBackend, cat("inference failed: ", result.error));
    const json body = inference_body(r, result, job->encodings);
    const Clock::time_point end = Clock::now();
    RequestTimes t;
    t.tokenization_ms = ms_between(arrived, tokenized);
    t.total_ms = ms_between(arrived, end);
    t.queue_ms = result.queue_ms - t.tokenization_ms;
    t.inference_ms = result.inference_ms;
    res.set_content(json_text(body), "application/json");
    res.set_header("x-subnet", subnet_name(result.subnet));
    res.set_header("x-subnet-width", cat(result.subnet.width));
    res.set_header("x-subnet-depth", cat(result.subnet.depth));
    if (r.latency_budget_ms) {
      res.set_header("x-latency-budget", milliseconds(*r.latency_budget_ms));
      res.set_header("x-budget-met", t.total_ms <= *r.latency_budget_ms ? "true" : "false");
    }
    res.set_header("x-batch-size", std::to_string(result.batch_rows));
    res.set_header("x-compute-type", model->int8() ? "cpu-int8" : "cpu");
    res.set_header("x-compute-tokens", std::to_string(tokens));
    res.set_header("x-compute-characters", std::to_string(characters));
    res.set_header("x-compute-time", milliseconds(t.inference_ms));
    res.set_header("x-queue-time", milliseconds(t.queue_ms));
    res.set_header("x-tokenization-time", milliseconds(t.tokenization_ms));
    res.set_header("x-inference-time", milliseconds(t.inference_ms));
    res.set_header("x-total-time", milliseconds(t.total_ms));
    metrics.request(t, r.latency_budget_ms.value_or(0.0));
  }

  // A refused request gets its status and TEI's error type; a fault of the server's own is 500.
  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const Clock::time_point arrived = Clock::now();
    const bool openai = endpoint == Endpoint::kOpenAIEmbeddings;
    try {
      const Request r = parse_request(
          endpoint, req.body, RequestLimits{options.max_client_batch, options.max_body_bytes});
      if (!r.ignored.empty()) res.set_header("x-slimbert-ignored-fields", joined(r.ignored));
      if (r.replaced_utf8)
        res.set_header("x-slimbert-replaced-invalid-utf8", std::to_string(r.replaced_utf8));
      if (endpoint == Endpoint::kTokenize)
        res.set_content(json_text(tokenize(r)), "application/json");
      else if (endpoint == Endpoint::kDecode)
        res.set_content(json_text(decode(r)), "application/json");
      else
        infer(r, arrived, res);
    } catch (const RequestError& e) {
      error(res, e.status(), e.type(), e.what(), openai);
    } catch (const std::exception& e) {
      error(res, 500, ErrorType::kBackend, cat("internal error: ", e.what()), openai);
    }
  }

  // Access control before any route: CORS preflight answers, then the API key.
  httplib::Server::HandlerResponse admit(const httplib::Request& req, httplib::Response& res) {
    if (connections && connections->running() > static_cast<size_t>(options.max_connections)) {
      error(res, 503, ErrorType::kOverloaded,
            cat("too many open connections (--max-connections ", options.max_connections,
                "): retry later"));
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::string origin = req.get_header_value("Origin");
    const auto& allowed = options.cors_allow_origin;
    const bool any = std::find(allowed.begin(), allowed.end(), "*") != allowed.end();
    if (!origin.empty() &&
        (any || std::find(allowed.begin(), allowed.end(), origin) != allowed.end())) {
      res.set_header("Access-Control-Allow-Origin", any ? "*" : origin);
      res.set_header("Vary", "Origin");
      if (req.method == "OPTIONS") {
        res.status = 204;
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "authorization, content-type");
        res.set_header("Access-Control-Max-Age", "600");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (options.api_key.empty() || req.path == "/health")
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (auth.rfind(prefix, 0) == 0 && same_secret(auth.substr(prefix.size()), options.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    error(res, 401, ErrorType::kValidation,
          auth.empty() ? "unauthorized: send \"Authorization: Bearer <api key>\""
                       : "unauthorized: wrong API key",
          req.path == "/v1/embeddings");
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  }

  void routes() {
    for (Endpoint e : all_endpoints())
      http.Post(
          std::string("/") + endpoint_name(e),
          [this, e](const httplib::Request& req, httplib::Response& res) { handle(e, req, res); });
    // TEI's route for clients given only the server's address (HuggingFace's inference clients
    // with an endpoint URL): /embed for an embedding model, /predict for a classifier.
    http.Post("/", [this](const httplib::Request& req, httplib::Response& res) {
      handle(model->has_classifier() ? Endpoint::kPredict : Endpoint::kEmbed, req, res);
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (batcher.stopping())
        return error(res, 503, ErrorType::kUnhealthy, "unhealthy: shutting down");
      res.status = 200;
    });
    http.Get("/info", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json_text(info(), 2), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json_text(models()), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.text(batcher.queued(), connections ? connections->running() : 0),
                      "text/plain; version=0.0.4");
    });
    http.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) { return admit(req, res); });
    // Statuses the library sets itself (404, 405, 413 for a body over the limit, 400) get a
    // JSON body too. It calls this for every status from 400 on, ours included: an answer that
    // already has its body keeps it.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Handled;
          const bool openai = req.path == "/v1/embeddings";
          if (res.status == 413) {
            error(res, 413, ErrorType::kValidation,
                  cat("request body over the limit of ", options.max_body_bytes,
                      " bytes (--max-body-bytes)"),
                  openai);
          } else {
            error(res, res.status, ErrorType::kValidation,
                  cat(res.status == 404 ? "no such endpoint" : "request refused", ": ", req.method,
                      " ", excerpt(req.path, 100)),
                  openai);
          }
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          error(res, 500, ErrorType::kBackend, "internal error");
        });
    http.set_logger(
        [this](const httplib::Request& req, const httplib::Response& res) { log(req, res); });
    http.set_payload_max_length(options.max_body_bytes);
    http.set_read_timeout(options.timeout_s, 0);
    http.set_write_timeout(options.timeout_s, 0);
    http.set_keep_alive_timeout(options.timeout_s);
    http.set_keep_alive_max_count(100000);
    // A response goes out in two writes (headers, body). With Nagle's algorithm the second waits
    // for the client's ACK of the first, which a client delays by up to 40 ms: on a kept-alive
    // connection (what pooled HTTP clients use) every answer took 40+ ms.
    http.set_tcp_nodelay(true);
    // Room over the cap so that connections over it still get their 503.
    const size_t threads = static_cast<size_t>(options.max_connections) + 64;
    http.new_task_queue = [this, threads] { return connections = new ConnectionThreads(threads); };
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

namespace {

// httplib listens with a backlog of 5: a burst of new connections (a load tool opening hundreds)
// overflows it and the kernel drops their SYNs, which clients resend only after a second. Its
// listening socket is private, so it is found by its port and listened on again with the
// system's maximum (listen() on a listening socket only updates the backlog).
void widen_backlog(int port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t addr_len = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) continue;
    const int bound =
        addr.ss_family == AF_INET    ? ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port)
        : addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                     : -1;
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

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
  widen_backlog(s.port);
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
