// The HTTP server: any sub-network per request, or the most accurate one that fits a latency
// budget, with requests batched dynamically by tokens. The budget counts the time a request
// has already waited, so under load the server steps down to smaller sub-networks instead of
// missing the budget.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "slimbert/infer/model.h"
#include "slimbert/infer/profile.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (see Server::port)
  int64_t max_batch_tokens = 8192;  // padded tokens in one forward pass
  int64_t max_batch_requests = 32;  // requests in one forward pass
  double max_wait_ms = 2.0;         // how long the first request of a batch waits for others
  int64_t max_queue = 128;          // waiting requests; more are answered 429
  size_t max_body_bytes = 1 << 20;  // larger bodies are answered 413
  size_t max_client_batch = 256;    // texts in one request
  // Tokens per text (0: sentence-transformers' max_seq_length, else the model's limit).
  int64_t max_length = 0;
  bool truncate = true;  // longer texts are truncated (false: 422)
  // A budget request that cannot be met even at the fastest sub-network, given the work queued
  // ahead of it, is answered 429 at once instead of late.
  bool shed_load = true;
  // /embed's pooling: cls, mean, max or lasttoken; empty: the model's sentence-transformers
  // Pooling module, else cls.
  std::string pooling;
  // Open connections; one more is answered 503 and closed. Each connection has its own thread
  // (started when needed), so idle and slow connections never hold up the others.
  int max_connections = 1024;
  int timeout_s = 5;    // a connection silent this long (mid-request, or idle) is closed
  std::string api_key;  // non-empty: every route but /health needs "Authorization: Bearer KEY"
  std::vector<std::string> cors_allow_origin;  // origins allowed cross-origin calls ("*": any)
  std::string served_model_name;               // /info and /v1/models (default: the model's dir)
  bool log_json = false;                       // one JSON object per request instead of a text line
  bool quiet = false;                          // no request log
};

// What a server runs: the model on its engine, its tokenizer, and the latency profile its budgets
// rest on.
struct ServedModel {
  std::shared_ptr<const infer::InferenceModel> model;
  Tokenizer tokenizer;
  infer::LatencyProfile profile;
};

struct ServeSetup {
  std::string model_dir;
  std::string profile;  // a profile file; empty: infer::default_profile_path, if it exists
  std::string grid;     // dynabert grid's grid.json: dev scores for a profile measured at start
  bool int8 = false;
  std::string gemm = "auto";  // auto | openblas | onednn; auto follows the profile's engine
  // Sub-networks to measure when there is no profile file (the profile's otherwise).
  std::vector<SubNet> subnets;
  RuntimeConfig runtime;
};

// Loads what `setup` names. With a profile file, its engine is the server's (a profile measured
// on another engine or precision is an error naming both); without one, a short profile of
// `setup.subnets` is measured here (`slimbert profile` makes a better one).
ServedModel load_served(const ServeSetup& setup);

class Server {
 public:
  Server(std::shared_ptr<const infer::InferenceModel> model, Tokenizer tokenizer,
         infer::LatencyProfile profile, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket (fails with a message when the address is taken); returns the port.
  int bind();
  // Serves until stop(): then stops accepting, answers the requests in flight and returns.
  void run();
  void stop();  // from any thread or a signal-watching thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimbert::serve
