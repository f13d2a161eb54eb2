// The HTTP server: any sub-network per request, or the most accurate one that fits a latency
// budget, with requests batched dynamically by tokens. The budget counts the time a request
// has already waited, so under load the server steps down to smaller sub-networks instead of
// missing the budget.
#pragma once

#include <memory>
#include <string>

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
  int64_t max_length = 0;           // tokens per text (0: the model's limit)
  bool truncate = true;             // longer texts are truncated (false: 422)
  // A budget request that cannot be met even at the fastest sub-network, given the work queued
  // ahead of it, is answered 429 at once instead of late.
  bool shed_load = true;
  std::string pooling = "cls";  // /embed default
  int http_threads = 16;
  int timeout_s = 10;     // read/write timeouts: slow clients cannot hold workers
  bool log_json = false;  // one JSON object per request instead of a text line
  bool quiet = false;     // no request log
};

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
