#include "slimbert/serve/batcher.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "slimbert/core/error.h"
#include "slimbert/data/batching.h"
#include "slimbert/infer/latency.h"
#include "slimbert/infer/run.h"
#include "slimbert/serve/request.h"

namespace slimbert::serve {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Batcher::Batcher(std::shared_ptr<const infer::InferenceModel> model, infer::LatencyProfile profile,
                 BatcherOptions options, int64_t pad_id, Metrics& metrics)
    : model_(std::move(model)),
      profile_(std::move(profile)),
      options_(options),
      pad_id_(pad_id),
      metrics_(metrics) {
  if (options_.max_batch_requests < 1 || options_.max_batch_tokens < 1 || options_.max_queue < 1)
    fail("serve: batch and queue limits must be positive");
}

Batcher::~Batcher() {
  stop();
}

void Batcher::warm_up(int64_t max_length) const {
  for (const infer::SubnetProfile& p : profile_.subnets)
    if (model_->supports(p.subnet))
      for (int64_t len : {std::min<int64_t>(16, max_length), std::min<int64_t>(128, max_length)})
        infer::measure_latency(*model_, 1, len, p.subnet, 1, 1);
}

void Batcher::start() {
  worker_ = std::thread([this] { work(); });
}

void Batcher::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void Batcher::stop() {
  close();
  if (worker_.joinable()) worker_.join();
}

bool Batcher::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

size_t Batcher::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

// The sub-network for `job` if it ran now in a batch of (rows, len).
SubNet Batcher::choose(const Job& job, Clock::time_point now, int64_t rows, int64_t len) const {
  if (job.fixed) return *job.fixed;
  const double left = *job.budget_ms - ms_between(job.arrived, now);
  return profile_.choose(left, {rows, len}).subnet;
}

// Predicted p99 of `job` alone at the fastest sub-network.
double Batcher::fastest_ms(const Job& job) const {
  const infer::Shape shape{static_cast<int64_t>(job.encodings.size()), job.max_len};
  const infer::SubnetProfile& p = profile_.choose(0.0, shape);
  return p.predict_ms(shape) * p.tail;
}

bool Batcher::fits(const Job& job, Clock::time_point now, const SubNet& s, int64_t rows,
                   int64_t len) const {
  if (job.fixed) return true;
  const infer::SubnetProfile* p = profile_.find(s);
  const double left = *job.budget_ms - ms_between(job.arrived, now);
  return p && p->predict_ms({rows, len}) * p->tail <= left;
}

std::future<BatchResult> Batcher::submit(std::shared_ptr<Job> job) {
  std::future<BatchResult> done = job->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw RequestError(503, "the server is shutting down");
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue)
      throw RequestError(429, cat("the queue is full (", options_.max_queue,
                                  " requests waiting, --max-queue): retry later"));
    if (job->budget_ms && options_.shed_load) {
      // Work ahead of this request, at the fastest sub-network: a lower bound of its wait.
      double ahead = busy_until_ > Clock::now() ? ms_between(Clock::now(), busy_until_) : 0.0;
      for (const auto& q : queue_) ahead += fastest_ms(*q);
      const double left = *job->budget_ms - ms_between(job->arrived, Clock::now());
      if (ahead + fastest_ms(*job) > left) {
        metrics_.shed();
        throw RequestError(429, cat("the latency budget of ", *job->budget_ms,
                                    " ms cannot be met: about ", std::lround(ahead),
                                    " ms of work is queued ahead even at the fastest "
                                    "sub-network; retry later"));
      }
    }
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return done;
}

// Takes the first request and every waiting one that runs the same sub-network within the batch
// limits (and, for budgets, still fits every budget in the batch).
std::vector<std::shared_ptr<Job>> Batcher::take_batch(SubNet* subnet) {
  const Clock::time_point now = Clock::now();
  std::vector<std::shared_ptr<Job>> batch{queue_.front()};
  queue_.pop_front();
  int64_t rows = static_cast<int64_t>(batch[0]->encodings.size()), len = batch[0]->max_len;
  *subnet = choose(*batch[0], now, rows, len);
  for (auto it = queue_.begin(); it != queue_.end();) {
    const Job& j = **it;
    const int64_t r = rows + static_cast<int64_t>(j.encodings.size());
    const int64_t l = std::max(len, j.max_len);
    bool ok =
        static_cast<int64_t>(batch.size()) < options_.max_batch_requests &&
        r * l <= options_.max_batch_tokens &&
        same_subnet(choose(j, now, static_cast<int64_t>(j.encodings.size()), j.max_len), *subnet) &&
        j.wants.tokens == batch[0]->wants.tokens && j.wants.sparse == batch[0]->wants.sparse;
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
    it = queue_.erase(it);
  }
  return batch;
}

void Batcher::run_batch(const std::vector<std::shared_ptr<Job>>& jobs, const SubNet& subnet) {
  const Clock::time_point start = Clock::now();
  std::vector<Encoding> all;
  std::vector<std::pair<int64_t, int64_t>> spans;  // (first row, rows) of each job
  for (const auto& j : jobs) {
    spans.push_back({static_cast<int64_t>(all.size()), static_cast<int64_t>(j->encodings.size())});
    all.insert(all.end(), j->encodings.begin(), j->encodings.end());
  }
  std::vector<BatchResult> results(jobs.size());
  try {
    // The jobs share their token and sparse wants (take_batch); each may pool another way.
    infer::RowWants wants = jobs[0]->wants;
    for (const auto& j : jobs)
      for (infer::Pooling p : j->wants.poolings)
        if (std::find(wants.poolings.begin(), wants.poolings.end(), p) == wants.poolings.end())
          wants.poolings.push_back(p);
    const infer::RowOutputs out =
        infer::run_rows(*model_, all, subnet, pad_id_, {0, options_.max_batch_tokens}, wants);
    for (size_t k = 0; k < jobs.size(); ++k) {
      const auto [begin, n] = spans[k];
      results[k].rows = out.rows(begin, n);
    }
  } catch (const std::exception& e) {
    for (BatchResult& r : results) r.error = e.what();
  }
  const Clock::time_point end = Clock::now();
  const int64_t rows = static_cast<int64_t>(all.size());
  metrics_.batch(rows, subnet, jobs.size());
  for (size_t k = 0; k < jobs.size(); ++k) {
    BatchResult& r = results[k];
    r.subnet = subnet;
    r.queue_ms = ms_between(jobs[k]->arrived, start);
    r.inference_ms = ms_between(start, end);
    r.batch_requests = static_cast<int64_t>(jobs.size());
    r.batch_rows = rows;
    jobs[k]->done.set_value(std::move(r));
  }
}

void Batcher::work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    // Wait briefly for company unless the batch is full already. A budget request does not wait:
    // its time is better spent on a larger sub-network, and under load the queue holds company
    // anyway.
    const Job& head = *queue_.front();
    const double wait_ms = head.budget_ms ? 0.0 : options_.max_wait_ms;
    const auto deadline =
        head.arrived + std::chrono::microseconds(static_cast<int64_t>(wait_ms * 1000.0));
    while (!stopping_ && static_cast<int64_t>(queue_.size()) < options_.max_batch_requests &&
           Clock::now() < deadline)
      cv_.wait_until(lock, deadline);
    SubNet subnet;
    const auto batch = take_batch(&subnet);
    int64_t rows = 0, len = 0;
    for (const auto& j : batch) {
      rows += static_cast<int64_t>(j->encodings.size());
      len = std::max(len, j->max_len);
    }
    const infer::SubnetProfile* running = profile_.find(subnet);
    busy_until_ = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(
                                     running ? running->predict_ms({rows, len}) * 1000.0 : 0.0));
    lock.unlock();
    run_batch(batch, subnet);
    lock.lock();
  }
}

}  // namespace slimbert::serve
