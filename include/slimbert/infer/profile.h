// Latency profiles: every sub-network's forward latency measured on this machine over a few
// batch sizes and lengths, a fitted model of it in (batch, tokens), and the choice of the most
// accurate sub-network whose predicted latency fits a budget.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "slimbert/infer/model.h"

namespace slimbert::infer {

struct Shape {
  int64_t batch = 1, seq = 128;
};

struct Timing {
  Shape shape;
  double p50_ms = 0, p99_ms = 0;
  double predicted_ms = 0;  // by the fitted model
};

struct SubnetProfile {
  SubNet subnet;
  // p50 ms = c0 + c1 * tokens + c2 * batch * seq^2 (tokens = batch * seq), each c >= 0: the linear
  // maps grow with tokens, attention with each sequence's length squared.
  double c0 = 0, c1 = 0, c2 = 0;
  double tail = 1.0;            // largest p99 / predicted p50 seen: predictions are scaled by it
  std::optional<double> score;  // dev score from a grid report
  double gflops = 0;            // encoder forward, one sequence of 128 tokens
  std::vector<Timing> fitted, held_out;
  std::string name() const;  // "w0.5_d0.75"
  double predict_ms(const Shape& shape) const;
};

struct LatencyProfile {
  std::string model;
  bool int8 = false;
  std::string threads, created;
  // Where the fp32 products ran ("openblas", "onednn"; "int8"): a server on this profile runs the
  // same engine, or its budgets would rest on another engine's timings. Empty in older files.
  std::string gemm;
  std::vector<SubnetProfile> subnets;

  // Most accurate sub-network (dev score, else FLOPs) whose predicted p99 (p50 x tail) fits in
  // `budget_ms`; the fastest one when none fits.
  const SubnetProfile& choose(double budget_ms, const Shape& shape) const;
  const SubnetProfile* find(const SubNet& subnet) const;

  nlohmann::json to_json() const;
  static LatencyProfile from_json(const nlohmann::json& j, const std::string& where);
  static LatencyProfile load(const std::string& path);
  void save(const std::string& path) const;  // atomic
};

// Where a profile of the model in `model_dir` lives unless told otherwise: profile.json, or
// profile-int8.json for the int8 engine.
std::string default_profile_path(const std::string& model_dir, bool int8);

// The widths a model serving `subnets` packs its weights for (int8, oneDNN): the full width and
// each sub-network's.
std::vector<double> widths_to_pack(const std::vector<SubNet>& subnets);

struct ProfileOptions {
  std::vector<SubNet> subnets;
  std::vector<Shape> fit = {{1, 16}, {1, 64}, {1, 128}, {4, 32}, {4, 128}, {16, 64}, {16, 128}};
  std::vector<Shape> held_out = {{2, 96}, {8, 48}, {8, 128}};
  int64_t iters = 10;
  std::string grid_json;  // dynabert grid's grid.json: dev scores per sub-network
};

// Sets c0, c1, c2 (least squares on p.fitted's p50, each >= 0) and tail, and the predictions of
// p.fitted and p.held_out.
void fit_latency_model(SubnetProfile& p);

// Measures and fits; `progress(done, total, name)` after each sub-network.
LatencyProfile measure_profile(
    const InferenceModel& model, const ProfileOptions& options,
    const std::function<void(size_t, size_t, const std::string&)>& progress = {});

}  // namespace slimbert::infer
