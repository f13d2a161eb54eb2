#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "slimbert/core/error.h"
#include "slimbert/infer/latency.h"
#include "slimbert/model/flops.h"

namespace slimbert::cli {

void add_bench(CLI::App& app) {
  struct Opts {
    std::string dir;
    int64_t batch = 1, seq = 128, iters = 30, warmup = 5;
    double width = 1.0, depth = 1.0;
    bool json = false;
    EngineOptions engine;
    RuntimeConfig runtime;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "forward-pass latency percentiles on random tokens");
  cmd->add_option("dir", opts->dir, "checkpoint directory")->required();
  cmd->add_option("--batch", opts->batch, "sequences per forward pass")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_option("--seq", opts->seq, "tokens per sequence")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_option("--iters", opts->iters, "timed iterations")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_option("--warmup", opts->warmup, "untimed iterations first")->capture_default_str();
  cmd->add_option("--width", opts->width, "sub-network width multiplier")->capture_default_str();
  cmd->add_option("--depth", opts->depth, "sub-network depth multiplier")->capture_default_str();
  cmd->add_flag("--json", opts->json, "print one JSON object");
  add_engine_options(cmd, &opts->engine);
  add_runtime_options(cmd, &opts->runtime);
  cmd->callback([opts] {
    const auto model = load_inference_model(opts->dir, opts->runtime, opts->engine, {opts->width});
    const BertConfig& config = model->config();
    if (opts->seq > config.max_position_embeddings)
      fail("--seq ", opts->seq, " exceeds max_position_embeddings ",
           config.max_position_embeddings);
    const SubNet subnet{opts->width, opts->depth};
    const infer::Latency lat =
        infer::measure_latency(*model, opts->batch, opts->seq, subnet, opts->iters, opts->warmup);
    const double p50 = lat.p50, p90 = lat.p90, p99 = lat.p99, mean = lat.mean;
    const double gflops =
        encoder_flops(config, opts->seq, subnet) * static_cast<double>(opts->batch) / 1e9;
    if (opts->json) {
      nlohmann::json j = {{"model", opts->dir},
                          {"batch", opts->batch},
                          {"seq", opts->seq},
                          {"width", opts->width},
                          {"depth", opts->depth},
                          {"threads", describe_threads()},
                          {"int8", opts->engine.int8},
                          {"gemm", model->engine_name()},
                          {"weight_mb", static_cast<double>(model->weight_bytes()) / 1e6},
                          {"iters", opts->iters},
                          {"p50_ms", p50},
                          {"p90_ms", p90},
                          {"p99_ms", p99},
                          {"mean_ms", mean},
                          {"gflop_per_s", gflops / (p50 / 1e3)}};
      if (const auto& m = model->options().measured)
        j["gemm_measured"] = {{"openblas_ms", m->blas_ms},
                              {"onednn_ms", m->onednn_ms},
                              {"onednn_speedup", m->onednn_speedup}};
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << std::fixed << std::setprecision(2) << opts->dir << ": batch " << opts->batch
              << " x seq " << opts->seq << " (width " << opts->width << ", depth " << opts->depth
              << (opts->engine.int8 ? ", int8" : cat(", fp32 on ", infer::gemm_name(model->gemm())))
              << "), threads " << describe_threads() << ", " << opts->iters << " iterations\n"
              << "  p50 " << p50 << " ms   p90 " << p90 << " ms   p99 " << p99 << " ms   mean "
              << mean << " ms   " << std::setprecision(1) << gflops / (p50 / 1e3) << " GFLOP/s\n";
  });

  struct PeakOpts {
    int64_t size = 1024;
    bool json = false;
    RuntimeConfig runtime;
  };
  auto peak = std::make_shared<PeakOpts>();
  auto* gemm = app.add_subcommand(
      "gemm-peak",
      "the machine's matrix-product rate per engine (fp32 OpenBLAS, fp32 oneDNN, int8 oneDNN): "
      "the limit benchmarks compare achieved rates with");
  gemm->add_option("--size", peak->size, "square products of this size")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{64}, int64_t{8192}));
  gemm->add_flag("--json", peak->json, "print one JSON object");
  add_runtime_options(gemm, &peak->runtime);
  gemm->callback([peak] {
    const infer::GemmPeak p = infer::measure_gemm_peak(peak->runtime, peak->size);
    if (peak->json) {
      std::cout << nlohmann::json{{"size", peak->size},
                                  {"threads", describe_threads()},
                                  {"openblas_fp32_gflop_per_s", p.openblas_fp32},
                                  {"onednn_fp32_gflop_per_s", p.onednn_fp32},
                                  {"int8_gflop_per_s", p.int8}}
                       .dump()
                << "\n";
      return;
    }
    std::cout << std::fixed << std::setprecision(1) << "GEMM " << peak->size << "^3, "
              << describe_threads() << " threads: fp32 OpenBLAS " << p.openblas_fp32
              << " GFLOP/s, fp32 oneDNN " << p.onednn_fp32 << " GFLOP/s, int8 oneDNN " << p.int8
              << " GOP/s\n";
  });
}

}  // namespace slimbert::cli
