// The server's backend: a queue of tokenized requests and one model thread that batches them.
// Waiting requests that run the same sub-network join one forward pass within a token budget; a
// request with a latency budget gets the most accurate sub-network whose predicted time fits what
// is left of its budget once it has waited, so under load the server steps down to smaller
// sub-networks instead of missing budgets, and sheds (429) what even the fastest cannot meet.
#pragma once

#include <ATen/Tensor.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "slimbert/infer/model.h"
#include "slimbert/infer/profile.h"
#include "slimbert/infer/run.h"
#include "slimbert/serve/metrics.h"
#include "slimbert/text/tokenizer.h"

namespace slimbert::serve {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b);

struct BatcherOptions {
  int64_t max_batch_tokens = 8192;  // padded tokens in one forward pass
  int64_t max_batch_requests = 32;  // requests in one forward pass
  double max_wait_ms = 2.0;         // how long the first request of a batch waits for others
  int64_t max_queue = 128;          // waiting requests; more are refused (429)
  bool shed_load = true;            // refuse budgets that cannot be met (429) at once
};

// What the model thread returns for one request: its rows of the batch's outputs.
struct BatchResult {
  SubNet subnet;
  infer::RowOutputs rows;  // the job's rows of the batch's outputs
  double queue_ms = 0, inference_ms = 0;
  int64_t batch_requests = 0, batch_rows = 0;
  std::string error;  // the forward pass failed
};

// One request waiting for the model.
struct Job {
  std::vector<Encoding> encodings;
  int64_t max_len = 0;  // longest encoding
  Clock::time_point arrived;
  std::optional<SubNet> fixed;      // an explicit sub-network
  std::optional<double> budget_ms;  // else a latency budget
  infer::RowWants wants;            // outputs beyond the logits
  std::promise<BatchResult> done;
};

class Batcher {
 public:
  Batcher(std::shared_ptr<const infer::InferenceModel> model, infer::LatencyProfile profile,
          BatcherOptions options, int64_t pad_id, Metrics& metrics);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // One pass per sub-network of the profile at a short and a long sequence: a shape's first pass
  // pays for thread start-up, heap growth and oneDNN's kernel creation, which budgets planned on
  // warm timings do not cover.
  void warm_up(int64_t max_length) const;
  void start();  // the model thread
  // Queues `job`; refuses it with a RequestError: 503 while stopping, 429 when the queue is full
  // or when its budget cannot be met even at the fastest sub-network given the work ahead.
  std::future<BatchResult> submit(std::shared_ptr<Job> job);
  // Stops taking jobs (503 from then on); the model thread finishes those queued.
  void close();
  // close(), then waits for the model thread to finish.
  void stop();
  bool stopping() const;
  size_t queued() const;

 private:
  SubNet choose(const Job& job, Clock::time_point now, int64_t rows, int64_t len) const;
  double fastest_ms(const Job& job) const;
  bool fits(const Job& job, Clock::time_point now, const SubNet& s, int64_t rows,
            int64_t len) const;
  std::vector<std::shared_ptr<Job>> take_batch(SubNet* subnet);
  void run_batch(const std::vector<std::shared_ptr<Job>>& jobs, const SubNet& subnet);
  void work();

  std::shared_ptr<const infer::InferenceModel> model_;
  infer::LatencyProfile profile_;
  BatcherOptions options_;
  int64_t pad_id_;
  Metrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  Clock::time_point busy_until_;  // predicted end of the batch running now
  std::thread worker_;
};

}  // namespace slimbert::serve
