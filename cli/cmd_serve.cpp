#include <sys/resource.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "commands.h"
#include "common.h"
#include "slimbert/core/fs.h"
#include "slimbert/infer/profile.h"
#include "slimbert/serve/server.h"

namespace slimbert::cli {
namespace {

volatile std::sig_atomic_t g_signal = 0;

struct SubnetOptions {
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};
  std::vector<double> depths = {1.0, 0.75, 0.5};
  std::vector<SubNet> list() const {
    std::vector<SubNet> out;
    for (double d : depths)
      for (double w : widths) out.push_back({w, d});
    return out;
  }
};

void add_subnet_options(CLI::App* cmd, SubnetOptions* o) {
  cmd->add_option("--widths", o->widths, "width multipliers of the sub-networks")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--depths", o->depths, "depth multipliers of the sub-networks")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
}

std::string fixed(double v, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << v;
  return out.str();
}

void print_profile(const infer::LatencyProfile& p) {
  std::cout << "| sub-network | dev score | GFLOPs | batch 1 x 128 p50 (ms) | held-out p50 error | "
               "held-out p99 / predicted p99 |\n|---|---:|---:|---:|---:|---:|\n";
  for (const infer::SubnetProfile& s : p.subnets) {
    double err = 0, p99 = 0;
    for (const infer::Timing& t : s.held_out) {
      err = std::max(err, std::abs(t.predicted_ms - t.p50_ms) / t.p50_ms);
      p99 = std::max(p99, t.p99_ms / (t.predicted_ms * s.tail));
    }
    const bool held = !s.held_out.empty();
    std::cout << "| " << s.name() << " | " << (s.score ? fixed(*s.score, 4) : "-") << " | "
              << fixed(s.gflops, 3) << " | " << fixed(s.predict_ms({1, 128}), 2) << " | "
              << (held ? fixed(100 * err, 1) + "%" : "-") << " | " << (held ? fixed(p99, 2) : "-")
              << " |\n";
  }
}

}  // namespace

void add_serve(CLI::App& app) {
  struct Opts {
    std::string model, profile, grid, api_key_file, log_format = "text";
    bool no_truncate = false;
    EngineOptions engine;
    SubnetOptions subnets;
    serve::ServerOptions server;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "serve", "HTTP server: predict/embed at any sub-network per request or by latency budget");
  cmd->add_option("model", o->model, "checkpoint directory")->required();
  cmd->add_option("--host", o->server.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->server.port, "port (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  add_engine_options(cmd, &o->engine);
  cmd->add_option("--profile", o->profile,
                  "latency profile (default MODEL/profile.json, profile-int8.json with --int8; "
                  "measured briefly at start when missing)");
  cmd->add_option("--grid", o->grid,
                  "grid.json of `dynabert grid`: dev scores for a profile "
                  "measured at start");
  add_subnet_options(cmd, &o->subnets);
  cmd->add_option("--max-batch-tokens", o->server.max_batch_tokens,
                  "padded tokens in one forward pass")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->capture_default_str();
  cmd->add_option("--max-batch-requests", o->server.max_batch_requests,
                  "requests batched into one forward pass")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  cmd->add_option("--max-wait-ms", o->server.max_wait_ms,
                  "how long a request waits for others to batch with")
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  cmd->add_option("--max-queue", o->server.max_queue, "waiting requests; more get 429")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->server.max_body_bytes, "larger bodies get 413")
      ->check(CLI::Range(size_t{64}, size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--max-client-batch-size", o->server.max_client_batch,
                  "texts in one request; more get 413")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-length", o->server.max_length,
                  "tokens per text (0: sentence-transformers' max_seq_length, else the model's "
                  "limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_flag("--no-truncate", o->no_truncate,
                "answer 422 to texts over the limit instead of truncating them");
  cmd->add_flag(
      "--no-shed", [o](int64_t) { o->server.shed_load = false; },
      "queue budget requests that cannot meet their budget instead of answering 429");
  cmd->add_option("--pooling", o->server.pooling,
                  "/embed pooling: cls, mean, max or lasttoken (default: the model's "
                  "sentence-transformers Pooling module, else cls)")
      ->check(CLI::IsMember({"cls", "mean", "max", "lasttoken"}));
  cmd->add_option("--max-connections", o->server.max_connections,
                  "open connections; more are answered 503")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  cmd->add_option("--timeout", o->server.timeout_s,
                  "seconds a connection may stay silent (mid-request or idle) before it is closed")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cmd->add_option("--api-key", o->server.api_key,
                  "require \"Authorization: Bearer KEY\" on every route but /health");
  cmd->add_option("--api-key-file", o->api_key_file,
                  "read the API key from this file (first line), kept out of the process list")
      ->check(CLI::ExistingFile)
      ->excludes("--api-key");
  cmd->add_option("--cors-allow-origin", o->server.cors_allow_origin,
                  "origins allowed to call from a browser (comma-separated; * for any)")
      ->delimiter(',');
  cmd->add_option("--served-model-name", o->server.served_model_name,
                  "the model's name in /info, /v1/models and OpenAI answers (default: its path)");
  cmd->add_option("--log-format", o->log_format, "request log: text or json")
      ->check(CLI::IsMember({"text", "json", "none"}))
      ->capture_default_str();
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    o->server.truncate = !o->no_truncate;
    o->server.log_json = o->log_format == "json";
    o->server.quiet = o->log_format == "none";
    if (!o->api_key_file.empty()) {
      std::istringstream lines(read_file(o->api_key_file));
      std::getline(lines, o->server.api_key);
      while (!o->server.api_key.empty() &&
             std::isspace(static_cast<unsigned char>(o->server.api_key.back())))
        o->server.api_key.pop_back();
      if (o->server.api_key.empty())
        fail(o->api_key_file, ": line 1: expected the API key, got an empty line");
    }
    // Every connection holds a descriptor: allow as many as the hard limit does.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
    serve::ServeSetup setup;
    setup.model_dir = o->model;
    setup.profile = o->profile;
    setup.grid = o->grid;
    setup.int8 = o->engine.int8;
    setup.gemm = o->engine.gemm;
    setup.subnets = o->subnets.list();
    setup.runtime = o->runtime;
    serve::ServedModel served = serve::load_served(setup);
    const auto model = served.model;
    const size_t subnets = served.profile.subnets.size();
    serve::Server server(model, std::move(served.tokenizer), std::move(served.profile), o->server);
    const int port = server.bind();
    // SIGINT and SIGTERM only raise a flag (any thread may take them: OpenBLAS starts its own
    // before main); a watcher thread stops the server, which finishes what is in flight.
    struct sigaction on_signal {};
    on_signal.sa_handler = [](int sig) { g_signal = sig; };
    sigemptyset(&on_signal.sa_mask);
    sigaction(SIGINT, &on_signal, nullptr);
    sigaction(SIGTERM, &on_signal, nullptr);
    std::atomic<bool> done{false};
    std::thread watcher([&] {
      while (!done) {
        if (const int sig = g_signal) {
          std::cerr << "serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
                    << ": finishing the requests in flight\n";
          server.stop();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
    std::cerr << "serve: listening on http://" << o->server.host << ":" << port << " (" << o->model
              << (o->engine.int8 ? ", int8" : cat(", fp32 on ", infer::gemm_name(model->gemm())))
              << ", " << subnets << " sub-networks, threads " << describe_threads() << ")"
              << std::endl;
    server.run();
    done = true;
    watcher.join();
    std::cerr << "serve: stopped\n";
  });
}

void add_profile(CLI::App& app) {
  struct Opts {
    std::string model, grid, out;
    EngineOptions engine;
    int64_t iters = 10;
    double budget_ms = 0;
    int64_t batch = 1, seq = 128;
    SubnetOptions subnets;
    RuntimeConfig runtime;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "profile", "measure every sub-network's latency here and fit a model of it (profile.json)");
  cmd->add_option("model", o->model, "checkpoint directory")->required();
  cmd->add_option("--grid", o->grid, "grid.json of `dynabert grid`: dev scores per sub-network");
  add_subnet_options(cmd, &o->subnets);
  add_engine_options(cmd, &o->engine);
  cmd->add_option("--iters", o->iters, "timed passes per shape")
      ->check(CLI::Range(int64_t{2}, int64_t{10000}))
      ->capture_default_str();
  cmd->add_option("--out", o->out,
                  "where to write it (default MODEL/profile.json, profile-int8.json with --int8)");
  cmd->add_option("--budget-ms", o->budget_ms,
                  "also print the sub-network chosen for this budget (with --batch, --seq)")
      ->check(CLI::Range(0.0, 3.6e6));
  cmd->add_option("--batch", o->batch, "batch for --budget-ms")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--seq", o->seq, "tokens per sequence for --budget-ms")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  add_runtime_options(cmd, &o->runtime);
  cmd->callback([o] {
    const std::vector<SubNet> subnets = o->subnets.list();
    const auto model =
        load_inference_model(o->model, o->runtime, o->engine, infer::widths_to_pack(subnets));
    infer::ProfileOptions po;
    po.subnets = subnets;
    po.iters = o->iters;
    po.grid_json = o->grid;
    const infer::LatencyProfile p =
        infer::measure_profile(*model, po, [](size_t done, size_t total, const std::string& name) {
          std::cerr << "profile: " << done << "/" << total << " " << name << "\n";
        });
    const std::string out =
        o->out.empty() ? infer::default_profile_path(o->model, o->engine.int8) : o->out;
    p.save(out);
    print_profile(p);
    std::cout << "\nwrote " << out << " (threads " << p.threads << ")\n";
    if (o->budget_ms > 0) {
      const infer::SubnetProfile& s = p.choose(o->budget_ms, {o->batch, o->seq});
      std::cout << "budget " << o->budget_ms << " ms at batch " << o->batch << " x " << o->seq
                << ": " << s.name() << " (predicted p99 "
                << s.predict_ms({o->batch, o->seq}) * s.tail << " ms)\n";
    }
  });
}

}  // namespace slimbert::cli
