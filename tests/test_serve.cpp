// The server end to end on loopback: answers equal the CLI's on the same sub-network, bad
// requests get the right status, the queue bound answers 429, budgets choose sub-networks, and
// SIGTERM finishes the requests in flight before a clean exit. Also the latency profile and the
// request parser.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>

#include "slimbert/core/json.h"
#include "slimbert/infer/profile.h"
#include "slimbert/infer/sentence_transformers.h"
#include "slimbert/serve/request.h"
#include "slimbert/serve/server.h"
#include "test_util.h"

extern char** environ;

namespace slimbert {
namespace {

using nlohmann::json;
using test::TempDir;

// A tiny random classifier with the real vocabulary, 4 heads so that widths slice it.
const std::string& model() {
  static TempDir dir;
  static const std::string path = [&] {
    const std::string p = dir / "m";
    const auto r =
        test::run_cli("init " + p + " --preset tiny --labels 3 --max-positions 64 --vocab " +
                      test::fixture("vocab/bert-base-uncased-vocab.txt"));
    EXPECT_EQ(r.code, 0) << r.err;
    return p;
  }();
  return path;
}

infer::LatencyProfile quick_profile(const infer::InferenceModel& m) {
  infer::ProfileOptions o;
  o.subnets = {{1.0, 1.0}, {0.5, 1.0}, {0.5, 0.5}};
  o.fit = {{1, 8}, {1, 32}, {4, 16}, {4, 32}};
  o.held_out = {{2, 16}};
  o.iters = 2;
  return infer::measure_profile(m, o);
}

// A server on a free loopback port, run on its own thread for the test's duration.
class LiveServer {
 public:
  explicit LiveServer(serve::ServerOptions options = {},
                      std::optional<infer::LatencyProfile> profile = std::nullopt,
                      const std::string& dir = model()) {
    options.port = 0;
    options.quiet = true;
    auto m = infer::InferenceModel::load(dir);
    server_ = std::make_unique<serve::Server>(m, Tokenizer::from_dir(dir),
                                              profile ? *profile : quick_profile(*m), options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~LiveServer() {
    server_->stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  int port() const { return port_; }
  httplib::Result post(const std::string& path, const std::string& body) const {
    return client().Post(path.c_str(), body, "application/json");
  }

 private:
  std::unique_ptr<serve::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

std::string read_file_if_exists(const std::string& path) {
  return std::filesystem::exists(path) ? read_file(path) : std::string();
}

json ok_json(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return json();
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body);
}

void expect_status(const httplib::Result& r, int status, const std::string& part) {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  const json j = json::parse(r->body);  // every error is JSON
  EXPECT_NE(j.at("error").get<std::string>().find(part), std::string::npos) << r->body;
}

TEST(Serve, PredictAndEmbedEqualTheCliOnTheSameSubNetwork) {
  LiveServer server;
  const std::vector<std::string> texts = {"the cat sat on the mat", "hello", "a b c d e f g h"};
  std::string lines;
  for (const auto& t : texts) lines += t + "\n";
  for (const SubNet s : {SubNet{1.0, 1.0}, SubNet{0.5, 0.5}}) {
    const json body = {{"inputs", texts}, {"width", s.width}, {"depth", s.depth}};
    const httplib::Result answer = server.post("/predict", body.dump());
    const json got = ok_json(answer);
    EXPECT_EQ(answer->get_header_value("x-subnet"), subnet_name(s));
    std::ostringstream flags;
    flags << " --width " << s.width << " --depth " << s.depth << " --format text";
    const auto cli = test::run_cli("predict " + model() + flags.str(), lines);
    ASSERT_EQ(cli.code, 0) << cli.err;
    std::istringstream in(cli.out);
    std::string line;
    for (size_t i = 0; std::getline(in, line); ++i) {
      const json want = json::parse(line);
      ASSERT_LT(i, got.size());
      // TEI's predictions: every label, best first.
      EXPECT_EQ(got[i][0]["label"], want["label"]);
      ASSERT_EQ(got[i].size(), want["probs"].size());
      for (const json& p : got[i])
        EXPECT_NEAR(p["score"].get<double>(),
                    want["probs"][p["label"].get<std::string>()].get<double>(), 1e-4)
            << p;
    }

    const json emb = ok_json(server.post("/embed", json{{"inputs", texts},
                                                        {"pooling", "mean"},
                                                        {"normalize", false},
                                                        {"width", s.width},
                                                        {"depth", s.depth}}
                                                       .dump()));
    const auto cli_e = test::run_cli("embed " + model() + flags.str() + " --pooling mean", lines);
    ASSERT_EQ(cli_e.code, 0) << cli_e.err;
    std::istringstream ein(cli_e.out);
    for (size_t i = 0; std::getline(ein, line); ++i) {
      const auto want = json::parse(line)["mean"].get<std::vector<double>>();
      const auto have = emb[i].get<std::vector<double>>();
      ASSERT_EQ(want.size(), have.size());
      for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(have[k], want[k], 1e-4);
    }
  }
  // Normalised by default; the OpenAI shape carries the same vectors.
  const json unit = ok_json(server.post("/embed", R"({"inputs": "hello"})"));
  double norm = 0;
  for (double v : unit[0].get<std::vector<double>>()) norm += v * v;
  EXPECT_NEAR(norm, 1.0, 1e-5);
  const json oa = ok_json(server.post("/v1/embeddings", R"({"input": ["hello"], "model": "x"})"));
  EXPECT_EQ(oa["object"], "list");
  EXPECT_EQ(oa["data"][0]["embedding"], unit[0]);
  EXPECT_GT(oa["usage"]["total_tokens"].get<int64_t>(), 0);
  const json tok = ok_json(server.post("/tokenize", R"({"inputs": ["hello world"]})"));
  std::vector<std::string> pieces;
  for (const json& t : tok[0]) pieces.push_back(t["text"]);
  EXPECT_EQ(pieces, (std::vector<std::string>{"[CLS]", "hello", "world", "[SEP]"}));
  // /similarity is the cosine of /embed's vectors; /rerank needs a one-output classifier.
  const json pair = ok_json(server.post("/embed", R"({"inputs": ["hello", "the cat sat"]})"));
  double dot = 0;
  for (size_t k = 0; k < pair[0].size(); ++k)
    dot += pair[0][k].get<double>() * pair[1][k].get<double>();
  const json sim = ok_json(server.post(
      "/similarity", R"({"inputs": {"source_sentence": "hello", "sentences": ["the cat sat"]}})"));
  EXPECT_NEAR(sim[0].get<double>(), dot, 1e-5);
  expect_status(server.post("/rerank", R"({"query": "q", "texts": ["a"]})"), 424,
                "not a re-ranker");
}

// A profile with known latencies (measured ones of a tiny model are noise): 10, 5 and 2 ms for
// any shape, the larger sub-networks scoring higher.
infer::LatencyProfile fixed_profile() {
  infer::LatencyProfile p;
  p.model = model();
  for (const auto& [subnet, ms, score] : std::vector<std::tuple<SubNet, double, double>>{
           {{1.0, 1.0}, 200.0, 0.9}, {{0.5, 1.0}, 100.0, 0.8}, {{0.5, 0.5}, 40.0, 0.7}}) {
    infer::SubnetProfile s;
    s.subnet = subnet;
    s.c0 = ms;
    s.score = score;
    p.subnets.push_back(s);
  }
  return p;
}

TEST(Serve, BudgetsChooseSubNetworksAndTheAnswerNamesThem) {
  LiveServer server({}, fixed_profile());
  // The most accurate sub-network predicted to fit (with 40 ms to spare for queueing on a busy
  // machine: the budget counts the time spent waiting).
  EXPECT_EQ(server.post("/predict", R"({"inputs": "hi", "latency_budget_ms": 140})")
                ->get_header_value("x-subnet"),
            "w0.5_d1");
  const auto big = server.post("/predict", R"({"inputs": "hi", "latency_budget_ms": 1e6})");
  ok_json(big);
  EXPECT_EQ(big->get_header_value("x-subnet"), "w1_d1");
  EXPECT_EQ(big->get_header_value("x-budget-met"), "true");
  // Without a budget nothing steps down, however loaded: /embed answers at the asked sub-network.
  EXPECT_EQ(server.post("/embed", R"({"inputs": "hi"})")->get_header_value("x-subnet"), "w1_d1");
  // No sub-network fits a microsecond: answered 429 at once (load shedding) ...
  expect_status(server.post("/predict", R"({"inputs": "hi", "latency_budget_ms": 0.001})"), 429,
                "cannot be met");
  // ... or, without shedding, run by the fastest sub-network.
  serve::ServerOptions no_shed;
  no_shed.shed_load = false;
  LiveServer patient(no_shed, fixed_profile());
  const auto tiny = patient.post("/predict", R"({"inputs": "hi", "latency_budget_ms": 0.001})");
  ok_json(tiny);
  EXPECT_EQ(tiny->get_header_value("x-subnet"), "w0.5_d0.5");
  EXPECT_EQ(tiny->get_header_value("x-budget-met"), "false");
  const auto r = server.post("/predict", R"({"inputs": "hi", "width": 0.5})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("x-subnet"), "w0.5_d1");
  for (const char* h : {"x-queue-time", "x-tokenization-time", "x-inference-time"})
    EXPECT_TRUE(r->has_header(h)) << h;
}

TEST(Serve, AKeptAliveConnectionIsNotStalledByDelayedAcks) {
  LiveServer server;
  httplib::Client c = server.client();
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true);  // its own writes must not wait for ACKs either: this tests the server
  std::vector<double> ms;
  for (int i = 0; i < 15; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = c.Post("/predict", R"({"inputs": "one short text"})", "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  // The tiny model answers in about a millisecond; a response held back by Nagle's algorithm
  // until the client's delayed ACK takes 40 ms or more, every time.
  std::nth_element(ms.begin(), ms.begin() + 7, ms.end());
  EXPECT_LT(ms[7], 30.0);
}

// A loopback connection to `port`, with `sent` written on it (a request begun, or nothing).
int open_connection(int port, const std::string& sent) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  if (!sent.empty() && send(fd, sent.data(), sent.size(), MSG_NOSIGNAL) < 0) return -1;
  return fd;
}

// Slow clients cannot deny service: 256 connections that sent half a request and stalled and
// 256 idle ones hold no thread another connection needs; past --max-connections, 503.
TEST(Serve, StalledAndIdleConnectionsDoNotDenyService) {
  serve::ServerOptions o;
  o.timeout_s = 60;  // they stay open for the whole test
  LiveServer server(o);
  const std::string stalled =
      "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 100\r\n\r\n{\"inputs\": ";
  std::vector<int> fds;
  for (int i = 0; i < 512; ++i) {
    const int fd = open_connection(server.port(), i % 2 ? stalled : "");
    ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno);
    fds.push_back(fd);
  }
  // Until the server has taken them all (each gets its thread): then they are open.
  for (int i = 0; i < 500; ++i) {
    const auto m = server.client().Get("/metrics");
    const size_t at = m ? m->body.find("\nslimbert_open_connections ") : std::string::npos;
    if (at != std::string::npos && std::atoi(m->body.c_str() + at + 27) > 512) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto health = server.client().Get("/health");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_LT(ms, 500.0) << "/health with 512 slow connections open";
  std::cerr << "/health with 256 stalled and 256 idle connections open: " << ms << " ms\n";
  const json got = ok_json(server.post("/predict", R"({"inputs": "still served"})"));
  EXPECT_EQ(got.size(), 3u);
  for (int fd : fds) close(fd);

  serve::ServerOptions capped;
  capped.max_connections = 8;
  capped.timeout_s = 60;
  LiveServer small(capped);
  std::vector<int> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(open_connection(small.port(), ""));
  httplib::Result over = small.post("/predict", R"({"inputs": "x"})");
  for (int i = 0; i < 100 && over && over->status == 200; ++i) {  // until it has taken all 8
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    over = small.post("/predict", R"({"inputs": "x"})");
  }
  expect_status(over, 503, "too many open connections");
  for (int fd : idle) close(fd);
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {  // until the server has seen them close
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto r = small.post("/predict", R"({"inputs": "x"})");
    status = r ? r->status : 0;
  }
  EXPECT_EQ(status, 200);
}

// Recorded answers: each request's status, body and chosen sub-network, as the server gave them
// when this test was written (tests/fixtures/serve/recorded.json). A change of the server's inside
// keeps them; a change of its interface records them again (SLIMBERT_RECORD_SERVE=1).
// Numbers agree to 1e-5 relative: other CPUs' kernels may round the last bits differently.
TEST(Serve, AnswersEqualTheRecordedOnes) {
  serve::ServerOptions o;
  o.max_client_batch = 4;
  o.max_length = 12;
  LiveServer server(o, fixed_profile());
  const std::vector<std::tuple<std::string, std::string, std::string>> requests = {
      {"POST", "/predict", R"({"inputs": "the cat sat on the mat"})"},
      {"POST", "/predict", R"({"inputs": ["hello", "a b c"], "width": 0.5, "depth": 0.5})"},
      {"POST", "/predict", R"({"inputs": [["a question", "an answer"]], "raw_scores": true})"},
      {"POST", "/predict", R"({"inputs": "budget", "latency_budget_ms": 100000})"},
      {"POST", "/predict", "{\"inputs\": \"caf\xe9 au lait\"}"},
      {"POST", "/predict",
       R"({"inputs": "one two three four five six seven eight nine ten eleven twelve"})"},
      {"POST", "/embed", R"({"inputs": ["hello world", "x"]})"},
      {"POST", "/embed", R"({"inputs": "hello", "pooling": "mean", "normalize": false})"},
      {"POST", "/embed", R"({"inputs": "hello", "width": 0.5})"},
      {"POST", "/embed", R"({"inputs": [101, 7592, 102], "dimensions": 4})"},
      {"POST", "/embed",
       R"({"inputs": "one two three four five six seven eight nine ten eleven twelve", "truncation_direction": "Left"})"},
      {"POST", "/embed_all", R"({"inputs": "hello"})"},
      {"POST", "/similarity",
       R"({"inputs": {"source_sentence": "a cat", "sentences": ["a dog", "x"]}})"},
      {"POST", "/rerank", R"({"query": "q", "texts": ["a"]})"},
      {"POST", "/decode", R"({"ids": [[101, 7592, 1010, 2088, 999, 102]]})"},
      {"POST", "/tokenize", R"({"inputs": ["Hello, World!", "caf\u00e9"]})"},
      {"POST", "/tokenize", R"({"inputs": "no specials", "add_special_tokens": false})"},
      {"POST", "/v1/embeddings", R"({"input": ["hello"], "model": "m"})"},
      {"POST", "/v1/embeddings", R"({"input": "hello", "encoding_format": "float"})"},
      {"POST", "/predict", "{not json"},
      {"POST", "/predict", R"({"inputs": 3})"},
      {"POST", "/predict", R"({"inputs": []})"},
      {"POST", "/predict", R"({"text": "x"})"},
      {"POST", "/predict", R"({"inputs": "x", "width": 2})"},
      {"POST", "/predict", R"({"inputs": "x", "width": 0.5, "latency_budget_ms": 9})"},
      {"POST", "/predict", R"({"inputs": ["a", "b", "c", "d", "e"]})"},
      {"POST", "/predict",
       R"({"inputs": "one two three four five six seven eight nine ten eleven", "truncate": false})"},
      {"POST", "/embed", R"({"inputs": "x", "raw_scores": true})"},
      {"POST", "/v1/embeddings", R"({"input": "x", "encoding_format": "base64"})"},
      {"POST", "/v1/embeddings", R"({"input": []})"},
      {"GET", "/nothing-here", ""},
      {"GET", "/health", ""},
  };
  json got = json::array();
  for (const auto& [method, path, body] : requests) {
    httplib::Client c = server.client();
    const httplib::Result r =
        method == "GET" ? c.Get(path.c_str()) : c.Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(r) << path << " " << body;
    std::string text = r->body;
    // The model's directory is a temporary one.
    for (size_t at; (at = text.find(model())) != std::string::npos;)
      text.replace(at, model().size(), "<model>");
    // The label with invalid UTF-8 replaced, as it reads back from the file.
    const json label = json::parse(json_text(json(method + " " + path + " " + body)));
    got.push_back({{"request", label},
                   {"status", r->status},
                   {"subnet", r->get_header_value("x-subnet")},
                   {"body", text.empty() ? json() : json::parse(text)}});
  }
  const std::string path = test::fixture("serve/recorded.json");
  if (std::getenv("SLIMBERT_RECORD_SERVE")) {
    write_file_atomic(path, got.dump(1) + "\n");
    GTEST_SKIP() << "recorded " << path;
  }
  const json want = json::parse(read_file(path));
  ASSERT_EQ(got.size(), want.size());
  double max_diff = 0;
  std::string max_where;
  std::function<void(const json&, const json&, const std::string&)> same =
      [&](const json& g, const json& w, const std::string& where) {
        if (w.is_number() && g.is_number() && !w.is_number_integer()) {
          const double a = g.get<double>(), b = w.get<double>();
          if (std::abs(a - b) > max_diff) max_where = where;
          max_diff = std::max(max_diff, std::abs(a - b));
          EXPECT_LE(std::abs(a - b), 1e-5 * std::max(1.0, std::abs(b))) << where;
        } else if (w.is_object() && g.is_object()) {
          EXPECT_EQ(g.size(), w.size()) << where << ": " << g.dump() << " vs " << w.dump();
          for (auto it = w.begin(); it != w.end(); ++it)
            if (g.contains(it.key()))
              same(g[it.key()], *it, where + "." + it.key());
            else
              ADD_FAILURE() << where << ": no field " << it.key();
        } else if (w.is_array() && g.is_array() && g.size() == w.size()) {
          for (size_t i = 0; i < w.size(); ++i)
            same(g[i], w[i], where + "[" + std::to_string(i) + "]");
        } else {
          EXPECT_EQ(g, w) << where;
        }
      };
  for (size_t i = 0; i < want.size(); ++i)
    same(got[i], want[i], want[i]["request"].get<std::string>());
  std::cerr << "recorded answers: largest difference " << max_diff << " (" << max_where << ")\n";
}

TEST(Serve, BadRequestsGetTheRightStatusAndNameTheField) {
  serve::ServerOptions o;
  o.max_body_bytes = 4096;
  o.max_client_batch = 4;
  o.max_length = 8;
  o.truncate = false;
  LiveServer server(o);
  expect_status(server.post("/predict", "{not json"), 422, "not valid JSON");
  expect_status(server.post("/predict", R"({"inputs": 3})"), 422, "'inputs'");
  expect_status(server.post("/predict", R"({"inputs": []})"), 400, "empty");
  expect_status(server.post("/predict", R"({"text": "x"})"), 422, "missing field 'inputs'");
  expect_status(server.post("/predict", R"({"inputs": "x", "width": 2})"), 422, "'width'");
  expect_status(server.post("/predict", R"({"inputs": "x", "width": 0.5, "latency_budget_ms": 9})"),
                422, "not both");
  expect_status(server.post("/predict", R"({"inputs": ["a", "b", "c", "d", "e"]})"), 413,
                "limit of 4");
  expect_status(server.post("/predict", json{{"inputs", std::string(5000, 'a')}}.dump()), 413,
                "4096 bytes");
  expect_status(server.post("/predict", R"({"inputs": "one two three four five six seven eight"})"),
                413, "more than the model's limit of 8");
  expect_status(server.client().Get("/nothing-here"), 404, "/nothing-here");
  // Invalid UTF-8 is replaced, counted, and answered.
  const auto bad_utf8 = server.post("/predict", "{\"inputs\": \"caf\xe9\"}");
  ok_json(bad_utf8);
  EXPECT_EQ(bad_utf8->get_header_value("x-slimbert-replaced-invalid-utf8"), "1");
  // Fields a route does not know are ignored, as TEI does, and named in a header.
  const auto ignored = server.post("/predict", R"({"inputs": "x", "widht": 0.5})");
  ok_json(ignored);
  EXPECT_EQ(ignored->get_header_value("x-slimbert-ignored-fields"), "widht");
  // Truncation on request.
  ok_json(server.post(
      "/predict", R"({"inputs": "one two three four five six seven eight", "truncate": true})"));

  const auto health = server.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json info = ok_json(server.client().Get("/info"));
  EXPECT_EQ(info["slimbert"]["subnets"].size(), 3u);
  EXPECT_EQ(info["max_input_length"], 8);
  EXPECT_EQ(info["auto_truncate"], false);
  const auto metrics = server.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  for (const char* series :
       {"slimbert_requests_total{endpoint=\"predict\",status=\"422\"} 5",
        "slimbert_requests_total{endpoint=\"predict\",status=\"413\"} 3",
        "slimbert_requests_total{endpoint=\"predict\",status=\"400\"} 1", "slimbert_queue_size 0",
        "slimbert_batch_size_count 3", "slimbert_subnet_chosen_total"})
    EXPECT_NE(metrics->body.find(series), std::string::npos) << series << "\n" << metrics->body;
}

// A failed forward pass (here a tokenizer whose ids the model has no embedding for, which
// load_served refuses but a library caller can still build) is TEI's 424 Backend, not a client
// error.
TEST(Serve, AFailedInferenceAnswers424Backend) {
  const Tokenizer real = Tokenizer::from_dir(model());
  std::vector<std::string> tokens;
  for (int64_t i = 0; i < real.vocab().size(); ++i) tokens.push_back(real.vocab().token(i));
  tokens.push_back("zzzextra");
  auto m = infer::InferenceModel::load(model());
  serve::ServerOptions o;
  o.port = 0;
  o.quiet = true;
  serve::Server server(m, Tokenizer(Vocab::from_tokens(tokens), real.options()), quick_profile(*m),
                       o);
  const int port = server.bind();
  std::thread thread([&] { server.run(); });
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(30, 0);
  const auto ok = c.Post("/predict", R"({"inputs": "hello"})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  const auto r = c.Post("/predict", R"({"inputs": "zzzextra"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 424) << r->body;
  const json body = json::parse(r->body);
  EXPECT_EQ(body.at("error_type"), "Backend");
  EXPECT_NE(body.at("error").get<std::string>().find("inference failed"), std::string::npos);
  EXPECT_NE(body.at("error").get<std::string>().find("outside the model's vocabulary"),
            std::string::npos);
  server.stop();
  thread.join();
}

TEST(Serve, AFullQueueAnswers429AndBatchesFormWhileWaiting) {
  serve::ServerOptions o;
  o.max_queue = 1;
  o.max_wait_ms = 1500;  // the first request waits for company, holding the only queue place
  LiveServer server(o);
  auto first = std::async(std::launch::async,
                          [&] { return server.post("/predict", R"({"inputs": "first"})"); });
  for (int i = 0; i < 200; ++i) {  // until it is queued
    const auto m = server.client().Get("/metrics");
    if (m && m->body.find("slimbert_queue_size 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  expect_status(server.post("/predict", R"({"inputs": "second"})"), 429, "queue is full");
  ok_json(first.get());

  serve::ServerOptions b;
  b.max_wait_ms = 1000;
  LiveServer batching(b);
  std::vector<std::future<httplib::Result>> calls;
  for (int i = 0; i < 4; ++i)
    calls.push_back(std::async(std::launch::async, [&] {
      return batching.post("/predict", R"({"inputs": ["x y", "z"], "width": 0.5})");
    }));
  int64_t largest = 0;
  for (auto& c : calls) {
    const auto r = c.get();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    largest = std::max<int64_t>(largest, std::stoll(r->get_header_value("x-batch-size")));
  }
  EXPECT_GT(largest, 2) << "requests waiting together were not batched";
}

// A sentence-transformers directory: its Pooling module (max here), Normalize module,
// max_seq_length and default prompt are the defaults of `embed` and `serve`, as in
// sentence-transformers' encode().
TEST(SentenceTransformers, ModulesSetTheDefaultsOfEmbedAndServe) {
  TempDir dir;
  const std::string st = dir / "st";
  const auto made = test::run_cli("init " + st + " --preset tiny --max-positions 64 --vocab " +
                                  test::fixture("vocab/bert-base-uncased-vocab.txt"));
  ASSERT_EQ(made.code, 0) << made.err;
  write_file_atomic(st + "/modules.json", R"([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])");
  std::filesystem::create_directories(st + "/1_Pooling");
  write_file_atomic(st + "/1_Pooling/config.json",
                    R"({"word_embedding_dimension": 128, "pooling_mode_cls_token": false,
                        "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true,
                        "pooling_mode_mean_sqrt_len_tokens": false, "include_prompt": true})");
  write_file_atomic(st + "/sentence_bert_config.json",
                    R"({"max_seq_length": 12, "do_lower_case": false})");
  write_file_atomic(
      st + "/config_sentence_transformers.json",
      R"({"prompts": {"query": "query: ", "passage": ""}, "default_prompt_name": "query"})");
  const infer::SentenceTransformer cfg = infer::read_sentence_transformer(st);
  EXPECT_TRUE(cfg.present);
  EXPECT_EQ(cfg.pooling, infer::Pooling::kMax);
  EXPECT_TRUE(cfg.normalize);
  EXPECT_EQ(cfg.max_seq_length, 12);
  EXPECT_EQ(cfg.default_prompt_name, "query");

  // The reference: prompt + text, truncated to 12 tokens, max over tokens, unit length.
  const std::string text = "the cat sat on the mat and then it sat on the dog for a long time";
  const auto m = infer::InferenceModel::load(st);
  const Tokenizer tok = Tokenizer::from_dir(st);
  const Encoding e =
      tok.encode("query: " + text, std::nullopt, EncodeOptions{12, Truncation::kLongestFirst});
  const at::Tensor pooled = m->forward(collate({e}, {0}, tok.pad_id())).last[0].amax(0);
  const at::Tensor unit = infer::normalize(pooled.unsqueeze(0))[0].contiguous();
  const std::vector<float> want(unit.data_ptr<float>(), unit.data_ptr<float>() + unit.numel());
  auto near_to = [](const json& got, const std::vector<float>& expected, const std::string& what) {
    ASSERT_EQ(got.size(), expected.size()) << what;
    for (size_t k = 0; k < expected.size(); ++k)
      EXPECT_NEAR(got[k].get<double>(), expected[k], 1e-5) << what;
  };
  auto near = [&](const json& got, const std::string& what) { near_to(got, want, what); };
  const auto cli = test::run_cli("embed " + st, text + "\n");
  ASSERT_EQ(cli.code, 0) << cli.err;
  const json line = json::parse(cli.out);
  EXPECT_FALSE(line.contains("cls")) << "only the model's own pooling";
  near(line["max"], "embed");

  LiveServer server({}, std::nullopt, st);
  const json info = ok_json(server.client().Get("/info"));
  EXPECT_EQ(info["model_type"]["embedding"]["pooling"], "max");
  EXPECT_EQ(info["max_input_length"], 12);
  near(ok_json(server.post("/embed", json{{"inputs", text}}.dump()))[0], "/embed");
  // Another prompt by name; an empty one is none.
  const json passage =
      ok_json(server.post("/embed", json{{"inputs", text}, {"prompt_name", "passage"}}.dump()));
  EXPECT_NE(passage[0], ok_json(server.post("/embed", json{{"inputs", text}}.dump()))[0]);

  // include_prompt false: mean pooling leaves out the prompt's tokens and the [CLS] before them
  // (sentence-transformers' prompt_length: the prompt encoded with its special tokens, less one).
  write_file_atomic(st + "/1_Pooling/config.json",
                    R"({"pooling_mode_mean_tokens": true, "include_prompt": false})");
  {
    const int64_t from = static_cast<int64_t>(tok.encode("query: ").input_ids.size()) - 1;
    ASSERT_EQ(from, 3);  // [CLS] query :
    const at::Tensor h = m->forward(collate({e}, {0}, tok.pad_id())).last[0];
    const at::Tensor mean = h.narrow(0, from, h.size(0) - from).mean(0);
    const at::Tensor u = infer::normalize(mean.unsqueeze(0))[0].contiguous();
    const std::vector<float> want_mean(u.data_ptr<float>(), u.data_ptr<float>() + u.numel());
    auto near_mean = [&](const json& got, const std::string& what) {
      near_to(got, want_mean, what);
    };
    const auto out = test::run_cli("embed " + st, text + "\n");
    ASSERT_EQ(out.code, 0) << out.err;
    near_mean(json::parse(out.out)["mean"], "embed, include_prompt false");
    LiveServer without_prompt({}, std::nullopt, st);
    near_mean(ok_json(without_prompt.post("/embed", json{{"inputs", text}}.dump()))[0],
              "/embed, include_prompt false");
  }

  // What slimbert cannot reproduce is an error naming the file.
  write_file_atomic(st + "/1_Pooling/config.json",
                    R"({"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true})");
  EXPECT_THROW(
      {
        try {
          infer::read_sentence_transformer(st);
        } catch (const InputError& err) {
          EXPECT_NE(std::string(err.what()).find("1_Pooling/config.json"), std::string::npos);
          throw;
        }
      },
      InputError);
}

// TEI's predictions (one list, or a list per input) as {label: score} per input.
json scores_by_label(const json& predictions) {
  json out = json::array();
  const bool single = !predictions.empty() && predictions[0].is_object();
  for (const json& one : single ? json::array({predictions}) : predictions) {
    json m = json::object();
    for (const json& p : one) m[p["label"].get<std::string>()] = p["score"];
    out.push_back(m);
  }
  return out;
}

// The short load-and-abuse run (bench/serve.py load is the long one): 16 clients, 320 requests
// mixing sizes, sub-networks, budgets and bad requests. Every good one is answered 200 with the
// answer the same request gives alone, every bad one its 4xx, and the server stays healthy.
TEST(Serve, ConcurrentMixedAndHostileRequests) {
  serve::ServerOptions o;
  o.max_body_bytes = 16384;
  o.max_queue = 1024;
  LiveServer server(o);
  const std::vector<std::string> words = {"cat", "dog", "the", "a", "sat", "ran", "mat", "blue"};
  auto body_of = [&](int i) {
    json inputs = json::array();
    for (int k = 0; k <= i % 4; ++k) {
      std::string t;
      for (int w = 0; w < 1 + (i * 7 + k) % 20; ++w)
        t += words[(i + w * 3 + k) % words.size()] + " ";
      inputs.push_back(t);
    }
    json b = {{"inputs", inputs}};
    if (i % 3 == 0) b["latency_budget_ms"] = 1e6;
    if (i % 3 == 1) b["width"] = 0.5;
    if (i % 3 == 2) b["depth"] = 0.5;
    return b.dump();
  };
  const std::vector<std::pair<std::string, int>> hostile = {
      {"{\"inputs\": [\"x\"", 422},
      {R"({"inputs": {"a": 1}})", 422},
      {R"({"inputs": []})", 400},
      {json{{"inputs", std::string(20000, 'x')}}.dump(), 413},
      {"{\"inputs\": \"\xff\xfe bad utf8\"}", 200},
      {R"({"inputs": "x", "depth": "half"})", 422},
  };
  // The answer each good request gets when it is alone.
  std::vector<json> alone(40);
  for (int i = 0; i < 40; ++i)
    alone[i] = scores_by_label(ok_json(server.post("/predict", body_of(i))));
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 16; ++c)
    clients.emplace_back([&, c] {
      const auto client = server.client();
      for (int k = 0; k < 20; ++k) {
        const int i = c * 20 + k;
        if (i % 5 == 4) {
          const auto& [body, status] = hostile[static_cast<size_t>(i / 5) % hostile.size()];
          const auto r = server.post("/predict", body);
          if (!r || r->status != status) ++failed;
          continue;
        }
        const auto r = server.post("/predict", body_of(i % 40));
        if (!r || r->status != 200) {
          ++failed;
          continue;
        }
        const json got = scores_by_label(json::parse(r->body));
        const json& want = alone[static_cast<size_t>(i % 40)];
        for (size_t n = 0; n < want.size(); ++n)
          for (auto it = want[n].begin(); it != want[n].end(); ++it)
            if (std::abs(got[n][it.key()].get<double>() - it->get<double>()) > 1e-4) ++wrong;
      }
    });
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  const auto health = server.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// `slimbert serve` as users start it: SIGTERM lets the request in flight finish, then exit 0.
TEST(Serve, SigtermFinishesTheRequestInFlightAndExitsCleanly) {
  TempDir tmp;
  const std::string err = tmp / "serve.err";
  // Spawned directly (no shell between): the pid is the server's.
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0);
  const std::vector<std::string> args = {SLIMBERT_CLI, "serve",         model(), "--port",
                                         "0",          "--widths",      "1,0.5", "--depths",
                                         "1",          "--max-wait-ms", "500"};
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, SLIMBERT_CLI, &files, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&files);
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::string log = read_file_if_exists(err);
    const size_t at = log.find("listening on http://127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(log.c_str() + at + 30);
  }
  ASSERT_GT(port, 0) << read_file_if_exists(err);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(30, 0);
  ASSERT_EQ(c.Get("/health")->status, 200);
  auto in_flight = std::async(std::launch::async, [&] {
    httplib::Client c2("127.0.0.1", port);
    return c2.Post("/predict", R"({"inputs": "still answered"})", "application/json");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const auto r = in_flight.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << read_file_if_exists(err);
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file_if_exists(err);
  EXPECT_NE(read_file_if_exists(err).find("serve: stopped"), std::string::npos);
}

TEST(LatencyProfile, FitsChoosesAndRoundTrips) {
  const auto m = infer::InferenceModel::load(model());
  const infer::LatencyProfile p = quick_profile(*m);
  ASSERT_EQ(p.subnets.size(), 3u);
  for (const auto& s : p.subnets) {
    EXPECT_GE(s.tail, 1.0);
    EXPECT_GT(s.predict_ms({4, 32}), 0.0) << s.name();
    ASSERT_EQ(s.held_out.size(), 1u);
  }
  EXPECT_EQ(p.choose(1e9, {1, 16}).name(), "w1_d1");
  TempDir tmp;
  p.save(tmp / "profile.json");
  const infer::LatencyProfile q = infer::LatencyProfile::load(tmp / "profile.json");
  EXPECT_EQ(q.to_json(), p.to_json());
  json broken = p.to_json();
  broken["subnets"][1]["width"] = 3;
  EXPECT_ERROR_CONTAINS(infer::LatencyProfile::from_json(broken, "p.json"), "p.json: subnets[1]",
                        "width");
}

TEST(LatencyProfile, TheFitKeepsEveryCostNonNegative) {
  // Exact timings of c0 = 0.5, c1 = 0.01, c2 = 1e-4 are recovered.
  infer::SubnetProfile exact;
  for (const infer::Shape s : {infer::Shape{1, 8}, {1, 32}, {4, 16}, {4, 32}, {8, 64}}) {
    const double b = static_cast<double>(s.batch), t = static_cast<double>(s.seq);
    exact.fitted.push_back({s, 0.5 + 0.01 * b * t + 1e-4 * b * t * t, 0.0, 0.0});
  }
  infer::fit_latency_model(exact);
  EXPECT_NEAR(exact.c0, 0.5, 1e-6);
  EXPECT_NEAR(exact.c1, 0.01, 1e-8);
  EXPECT_NEAR(exact.c2, 1e-4, 1e-10);
  // Timings of a tiny model where the first shape caught a stall, larger than any growth with
  // shape: fitted without the constraint, c0 = 6.85, c1 = -0.116 and c2 = 1.77e-3 (solved
  // exactly in rationals), predicting -0.74 ms at (4, 32). Every term must stay a cost, and every
  // fitted shape gets a time.
  infer::SubnetProfile noisy;
  noisy.fitted = {{{1, 8}, 10.0, 11.0, 0.0},
                  {{1, 32}, 0.5, 0.6, 0.0},
                  {{4, 16}, 0.5, 0.6, 0.0},
                  {{4, 32}, 0.5, 0.6, 0.0}};
  infer::fit_latency_model(noisy);
  EXPECT_GE(noisy.c0, 0.0);
  EXPECT_GE(noisy.c1, 0.0);
  EXPECT_GE(noisy.c2, 0.0);
  for (const auto& t : noisy.fitted) EXPECT_GT(t.predicted_ms, 0.0) << t.shape.batch;
  EXPECT_GE(noisy.tail, 1.0);
}

TEST(Cli, ProfileWritesWhatServeReadsAndBenchRunsInt8) {
  TempDir tmp;
  const std::string out = tmp / "profile.json";
  const auto r = test::run_cli(
      "profile " + model() + " --widths 1,0.5 --depths 1 --iters 2 --budget-ms 1000 --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("| w0.5_d1 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("budget 1000 ms at batch 1 x 128: w1_d1"), std::string::npos) << r.out;
  const infer::LatencyProfile p = infer::LatencyProfile::load(out);
  EXPECT_EQ(p.subnets.size(), 2u);
  EXPECT_FALSE(p.int8);
  // --gemm auto measured an engine; a server on the profile runs it, and refuses another by name.
  ASSERT_TRUE(p.gemm == "openblas" || p.gemm == "onednn") << p.gemm;
  const std::string other = p.gemm == "openblas" ? "onednn" : "openblas";
  const auto mismatch =
      test::run_cli("serve " + model() + " --gemm " + other + " --port 0 --profile " + out);
  EXPECT_NE(mismatch.code, 0);
  EXPECT_NE(mismatch.err.find(out + ": a profile measured with --gemm " + p.gemm),
            std::string::npos)
      << mismatch.err;
  const auto fp32 = test::run_cli("bench " + model() + " --json --iters 2 --seq 16");
  ASSERT_EQ(fp32.code, 0) << fp32.err;
  const json timed = json::parse(fp32.out);
  EXPECT_TRUE(timed["gemm"] == "openblas" || timed["gemm"] == "onednn") << timed;
  EXPECT_GT(timed["gemm_measured"]["openblas_ms"].get<double>(), 0.0) << timed;
  EXPECT_GT(timed["gemm_measured"]["onednn_ms"].get<double>(), 0.0) << timed;
  EXPECT_EQ(timed["gemm"] == "onednn", timed["gemm_measured"]["onednn_speedup"].get<double>() > 1);
  // An fp32 profile is refused by an int8 server, by name.
  const auto refused = test::run_cli("serve " + model() + " --int8 --port 0 --profile " + out);
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find("measured without --int8"), std::string::npos) << refused.err;

  if (!infer::select_int8_engine()) GTEST_SKIP() << "no oneDNN quantized engine";
  const auto b = test::run_cli("bench " + model() + " --int8 --json --iters 2 --seq 16");
  ASSERT_EQ(b.code, 0) << b.err;
  const json j = json::parse(b.out);
  EXPECT_EQ(j["int8"], true);
  EXPECT_GT(j["p50_ms"].get<double>(), 0.0);
}

TEST(ServeRequest, ParsesTheShapesAndRejectsTheRest) {
  using serve::Endpoint;
  const serve::Request pairs =
      serve::parse_request(Endpoint::kPredict, R"({"inputs": [["a", "b"], "c"], "depth": 0.5})");
  ASSERT_EQ(pairs.inputs.size(), 2u);
  EXPECT_EQ(pairs.inputs[0].pair, "b");
  EXPECT_FALSE(pairs.inputs[1].pair);
  EXPECT_EQ(pairs.depth, 0.5);
  EXPECT_FALSE(pairs.width);
  auto status = [](Endpoint e, const std::string& body) {
    try {
      serve::parse_request(e, body);
    } catch (const serve::RequestError& err) {
      return err.status();
    }
    return 200;
  };
  EXPECT_EQ(status(Endpoint::kEmbed, R"({"inputs": [["a", "b"]]})"), 422);  // no pairs to embed
  EXPECT_EQ(status(Endpoint::kOpenAIEmbeddings, R"({"inputs": "x"})"), 422);
  EXPECT_EQ(status(Endpoint::kOpenAIEmbeddings, R"({"input": "x", "encoding_format": "hex"})"),
            422);
  EXPECT_EQ(status(Endpoint::kPredict, R"({"inputs": "x", "latency_budget_ms": -1})"), 422);
  EXPECT_EQ(status(Endpoint::kPredict, R"([1, 2])"), 422);
  EXPECT_EQ(status(Endpoint::kPredict, ""), 422);
  // Found by fuzz_request: a number past double's range was the JSON library's own exception.
  EXPECT_EQ(status(Endpoint::kPredict, "184467642147483e2147483"), 422);
  EXPECT_EQ(status(Endpoint::kPredict, R"({"inputs": "x", "width": 1e999999})"), 422);
  EXPECT_EQ(status(Endpoint::kEmbed, R"({"inputs": []})"), 400);
  EXPECT_EQ(status(Endpoint::kEmbed, R"({"inputs": [-1]})"), 422);
  EXPECT_EQ(status(Endpoint::kEmbed, R"({"inputs": "x", "dimensions": 0})"), 422);
  EXPECT_EQ(status(Endpoint::kEmbed, R"({"inputs": "x", "truncation_direction": "Up"})"), 422);
  EXPECT_EQ(status(Endpoint::kRerank, R"({"query": "q", "texts": []})"), 400);
  EXPECT_EQ(status(Endpoint::kRerank, R"({"texts": ["a"]})"), 422);
  EXPECT_EQ(status(Endpoint::kSimilarity, R"({"inputs": {"source_sentence": "a"}})"), 422);
  EXPECT_EQ(status(Endpoint::kDecode, R"({"ids": [1, "a"]})"), 422);
  try {
    serve::parse_request(Endpoint::kPredict, R"({"inputs": []})");
  } catch (const serve::RequestError& e) {
    EXPECT_EQ(e.type(), serve::ErrorType::kEmpty);
  }

  // TEI's readings: two strings are one pair, any other list of strings a batch of texts.
  const serve::Request pair = serve::parse_request(Endpoint::kPredict, R"({"inputs": ["a", "b"]})");
  ASSERT_EQ(pair.inputs.size(), 1u);
  EXPECT_TRUE(pair.single);
  EXPECT_EQ(pair.inputs[0].pair, "b");
  EXPECT_EQ(
      serve::parse_request(Endpoint::kPredict, R"({"inputs": ["a", "b", "c"]})").inputs.size(), 3u);
  // Token ids: one list is one input; a list mixes texts and id lists.
  const serve::Request ids = serve::parse_request(Endpoint::kEmbed, R"({"inputs": [101, 7, 102]})");
  ASSERT_EQ(ids.inputs.size(), 1u);
  EXPECT_EQ(ids.inputs[0].ids, (std::vector<int64_t>{101, 7, 102}));
  const serve::Request mixed = serve::parse_request(
      Endpoint::kEmbed, R"({"inputs": ["a", [5, 6]], "truncation_direction": "Left"})");
  ASSERT_EQ(mixed.inputs.size(), 2u);
  EXPECT_FALSE(mixed.inputs[0].ids);
  EXPECT_TRUE(mixed.inputs[1].ids);
  EXPECT_TRUE(mixed.truncate_left);
  const serve::Request rerank = serve::parse_request(
      Endpoint::kRerank, R"({"query": "q", "texts": ["a", "b"], "return_text": true})");
  ASSERT_EQ(rerank.inputs.size(), 2u);
  EXPECT_EQ(rerank.inputs[1].text, "q");
  EXPECT_EQ(rerank.inputs[1].pair, "b");
  EXPECT_TRUE(rerank.return_text);
  const serve::Request sim = serve::parse_request(
      Endpoint::kSimilarity,
      R"({"inputs": {"source_sentence": "s", "sentences": ["a"]}, "parameters": {"truncate": true}})");
  ASSERT_EQ(sim.inputs.size(), 2u);
  EXPECT_EQ(sim.truncate, true);
  const serve::Request decode = serve::parse_request(
      Endpoint::kDecode, R"({"ids": [[1, 2], [3]], "skip_special_tokens": false})");
  EXPECT_EQ(decode.ids.size(), 2u);
  EXPECT_FALSE(decode.skip_special_tokens);
  const serve::Request b64 =
      serve::parse_request(Endpoint::kOpenAIEmbeddings,
                           R"({"input": "x", "encoding_format": "base64", "dimensions": 8})");
  EXPECT_TRUE(b64.base64);
  EXPECT_EQ(b64.dimensions, 8);
  const serve::Request extra = serve::parse_request(
      Endpoint::kTokenize, R"({"inputs": "x", "width": 0.5, "parameters": {}})");
  EXPECT_EQ(extra.ignored, (std::vector<std::string>{"parameters", "width"}));
  EXPECT_EQ(
      serve::parse_request(Endpoint::kEmbed, "{\"inputs\": \"x\", \"a\\r\\nb\u00e9\": 1}").ignored,
      (std::vector<std::string>{"a??b??"}));
}

}  // namespace
}  // namespace slimbert
