#include "slimbert/infer/profile.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <limits>
#include <sstream>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/core/runtime.h"
#include "slimbert/infer/latency.h"
#include "slimbert/model/flops.h"

namespace slimbert::infer {

using nlohmann::json;

std::string SubnetProfile::name() const {
  return subnet_name(subnet);
}

double SubnetProfile::predict_ms(const Shape& shape) const {
  const double b = static_cast<double>(shape.batch), t = static_cast<double>(shape.seq);
  return std::max(0.0, c0 + c1 * b * t + c2 * b * t * t);
}

namespace {

double accuracy_key(const SubnetProfile& p) {
  return p.score ? *p.score : p.gflops;
}

json timing_json(const Timing& t) {
  return {{"batch", t.shape.batch},
          {"seq", t.shape.seq},
          {"p50_ms", t.p50_ms},
          {"p99_ms", t.p99_ms},
          {"predicted_ms", t.predicted_ms}};
}

Timing timing_from(const json& j, const std::string& where) {
  const JsonFields f(j, where);
  Timing t;
  t.shape = {f.integer("batch", 1, 1 << 20), f.integer("seq", 1, 1 << 20)};
  t.p50_ms = f.number("p50_ms");
  t.p99_ms = f.number("p99_ms");
  t.predicted_ms = f.has("predicted_ms") ? f.number("predicted_ms") : 0.0;
  return t;
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Dev scores (else the first split's) of a grid report's first series, by sub-network.
std::vector<std::pair<SubNet, double>> grid_scores(const std::string& path) {
  const json j = read_json_file(path);
  check_schema_version(j, path, kGridVersion);
  const JsonFields top(j, path);
  const json& series = top.at("series");
  if (!series.is_array() || series.empty()) top.bad("series", "a non-empty list");
  std::vector<std::pair<SubNet, double>> out;
  const json& points = series[0].at("points");
  for (size_t i = 0; i < points.size(); ++i) {
    const JsonFields p(points[i], cat(path, ": series[0].points[", i, "]"));
    const json& scores = p.at("scores");
    if (!scores.is_object() || scores.empty()) p.bad("scores", "an object of split scores");
    const json& s = scores.contains("dev") ? scores["dev"] : scores.begin().value();
    if (!s.is_number()) p.bad("scores", "numbers");
    out.push_back({SubNet{p.number("width"), p.number("depth")}, s.get<double>()});
  }
  return out;
}

}  // namespace

// Least squares for p50 = c0 + c1 x1 + c2 x2 with every coefficient >= 0: each term is a cost
// (fixed overhead, linear maps, attention), and an unconstrained fit to noisy timings of a small
// model can trade a negative term for a larger one and predict nothing, or less than nothing, at a
// shape it was fitted on. With three terms the constrained optimum is the best feasible solution
// of the unconstrained problems over the 7 non-empty sets of terms. Each is solved through its
// normal equations in double, the features scaled to unit size first (they differ by orders of
// magnitude).
void fit_latency_model(SubnetProfile& p) {
  const int64_t n = static_cast<int64_t>(p.fitted.size());
  at::Tensor X = at::empty({n, 3}, at::kDouble), y = at::empty({n}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) {
    const Shape& s = p.fitted[static_cast<size_t>(i)].shape;
    const double b = static_cast<double>(s.batch), t = static_cast<double>(s.seq);
    X[i][0] = 1.0;
    X[i][1] = b * t;
    X[i][2] = b * t * t;
    y[i] = p.fitted[static_cast<size_t>(i)].p50_ms;
  }
  const at::Tensor scale = X.abs().amax(0).clamp_min(1e-12);
  const at::Tensor Xs = X / scale;
  double best_residual = std::numeric_limits<double>::infinity();
  std::array<double, 3> best{0.0, 0.0, 0.0};
  for (int terms = 7; terms >= 1; --terms) {
    std::vector<int64_t> cols;
    for (int64_t k = 0; k < 3; ++k)
      if (terms & (1 << k)) cols.push_back(k);
    const at::Tensor index = at::tensor(cols, at::kLong);
    const at::Tensor Xk = Xs.index_select(1, index);
    const int64_t m = static_cast<int64_t>(cols.size());
    const at::Tensor A = Xk.t().mm(Xk) + 1e-9 * at::eye(m, at::kDouble);
    const at::Tensor ck = at::linalg_solve(A, Xk.t().mv(y));
    if (ck.min().item<double>() < 0.0) continue;
    const double residual = (Xk.mv(ck) - y).square().sum().item<double>();
    if (residual >= best_residual) continue;
    best_residual = residual;
    best = {0.0, 0.0, 0.0};
    const at::Tensor c = ck / scale.index_select(0, index);
    for (int64_t j = 0; j < m; ++j)
      best[static_cast<size_t>(cols[static_cast<size_t>(j)])] = c[j].item<double>();
  }
  p.c0 = best[0];
  p.c1 = best[1];
  p.c2 = best[2];
  p.tail = 1.0;
  for (Timing& t : p.fitted) {
    t.predicted_ms = p.predict_ms(t.shape);
    if (t.predicted_ms > 0) p.tail = std::max(p.tail, t.p99_ms / t.predicted_ms);
  }
  for (Timing& t : p.held_out) t.predicted_ms = p.predict_ms(t.shape);
}

const SubnetProfile& LatencyProfile::choose(double budget_ms, const Shape& shape) const {
  if (subnets.empty()) fail("latency profile: no sub-networks");
  const SubnetProfile* best = nullptr;
  const SubnetProfile* fastest = &subnets.front();
  for (const SubnetProfile& p : subnets) {
    if (p.predict_ms(shape) < fastest->predict_ms(shape)) fastest = &p;
    if (p.predict_ms(shape) * p.tail <= budget_ms &&
        (!best || accuracy_key(p) > accuracy_key(*best)))
      best = &p;
  }
  return best ? *best : *fastest;
}

const SubnetProfile* LatencyProfile::find(const SubNet& subnet) const {
  for (const SubnetProfile& p : subnets)
    if (same_subnet(p.subnet, subnet)) return &p;
  return nullptr;
}

json LatencyProfile::to_json() const {
  json subs = json::array();
  for (const SubnetProfile& p : subnets) {
    json fitted = json::array(), held = json::array();
    for (const Timing& t : p.fitted) fitted.push_back(timing_json(t));
    for (const Timing& t : p.held_out) held.push_back(timing_json(t));
    json s = {{"width", p.subnet.width}, {"depth", p.subnet.depth}, {"name", p.name()},
              {"c0_ms", p.c0},           {"c1_ms_per_token", p.c1}, {"c2_ms_per_token_seq", p.c2},
              {"tail", p.tail},          {"gflops", p.gflops},      {"fitted", fitted},
              {"held_out", held}};
    if (p.score) s["score"] = *p.score;
    subs.push_back(s);
  }
  return {{"format", "slimbert-latency-profile"},
          {kSchemaVersionKey, kProfileVersion},
          {"model", model},
          {"int8", int8},
          {"threads", threads},
          {"gemm", gemm},
          {"created", created},
          {"subnets", subs}};
}

LatencyProfile LatencyProfile::from_json(const json& j, const std::string& where) {
  check_schema_version(j, where, kProfileVersion);
  const JsonFields top(j, where);
  if (top.string("format") != "slimbert-latency-profile")
    top.bad("format", "\"slimbert-latency-profile\"");
  LatencyProfile p;
  p.model = top.string("model");
  const json& int8 = top.at("int8");
  if (!int8.is_boolean()) top.bad("int8", "true or false");
  p.int8 = int8.get<bool>();
  p.threads = top.has("threads") ? top.string("threads") : "";
  p.gemm = top.has("gemm") ? top.string("gemm") : "";
  if (!p.gemm.empty() && p.gemm != "openblas" && p.gemm != "onednn" && p.gemm != "int8")
    top.bad("gemm", "openblas, onednn or int8");
  p.created = top.has("created") ? top.string("created") : "";
  const json& subs = top.at("subnets");
  if (!subs.is_array() || subs.empty() || subs.size() > 4096)
    top.bad("subnets", "a list of 1 to 4096 sub-networks");
  for (size_t i = 0; i < subs.size(); ++i) {
    const JsonFields f(subs[i], cat(where, ": subnets[", i, "]"));
    SubnetProfile s;
    s.subnet = {f.number("width"), f.number("depth")};
    if (!(s.subnet.width > 0 && s.subnet.width <= 1)) f.bad("width", "a number in (0, 1]");
    if (!(s.subnet.depth > 0 && s.subnet.depth <= 1)) f.bad("depth", "a number in (0, 1]");
    s.c0 = f.number("c0_ms");
    s.c1 = f.number("c1_ms_per_token");
    s.c2 = f.number("c2_ms_per_token_seq");
    s.tail = f.number("tail");
    if (!(s.tail >= 1.0 && s.tail < 1e3)) f.bad("tail", "a number in [1, 1000)");
    s.gflops = f.number("gflops");
    if (f.has("score")) s.score = f.number("score");
    for (const char* key : {"fitted", "held_out"}) {
      if (!f.has(key)) continue;
      const json& list = f.at(key);
      if (!list.is_array() || list.size() > 1024) f.bad(key, "a list of at most 1024 timings");
      for (size_t k = 0; k < list.size(); ++k)
        (std::string(key) == "fitted" ? s.fitted : s.held_out)
            .push_back(timing_from(list[k], cat(f.where(), ".", key, "[", k, "]")));
    }
    p.subnets.push_back(std::move(s));
  }
  return p;
}

std::string default_profile_path(const std::string& model_dir, bool int8) {
  return (std::filesystem::path(model_dir) / (int8 ? "profile-int8.json" : "profile.json"))
      .string();
}

std::vector<double> widths_to_pack(const std::vector<SubNet>& subnets) {
  std::vector<double> widths{1.0};
  for (const SubNet& s : subnets) widths.push_back(s.width);
  return widths;
}

LatencyProfile LatencyProfile::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

void LatencyProfile::save(const std::string& path) const {
  write_file_atomic(path, json_text(to_json(), 2) + "\n");
}

LatencyProfile measure_profile(
    const InferenceModel& model, const ProfileOptions& o,
    const std::function<void(size_t, size_t, const std::string&)>& progress) {
  if (o.subnets.empty()) fail("profile: no sub-networks to measure");
  if (o.iters < 2) fail("profile: at least 2 iterations per shape");
  const int64_t max_seq = model.config().max_sequence_length();
  auto usable = [&](std::vector<Shape> shapes) {
    for (Shape& s : shapes) s.seq = std::min(s.seq, max_seq);
    return shapes;
  };
  const std::vector<Shape> fit_shapes = usable(o.fit), held = usable(o.held_out);
  if (fit_shapes.size() < 3) fail("profile: at least 3 shapes to fit 3 coefficients");
  std::vector<std::pair<SubNet, double>> scores;
  if (!o.grid_json.empty()) scores = grid_scores(o.grid_json);

  LatencyProfile out;
  out.model = model.dir();
  out.int8 = model.int8();
  out.threads = describe_threads();
  out.gemm = model.engine_name();
  out.created = now_utc();
  // One untimed round: thread pools and the allocator warm up on the first passes.
  measure_latency(model, 4, std::min<int64_t>(64, max_seq), o.subnets.front(), 1, 3);
  for (size_t i = 0; i < o.subnets.size(); ++i) {
    SubnetProfile p;
    p.subnet = o.subnets[i];
    if (!model.supports(p.subnet))
      fail("profile: sub-network ", p.name(), " cannot run (int8 packs only the widths asked for)");
    p.gflops = encoder_flops(model.config(), std::min<int64_t>(128, max_seq), p.subnet) / 1e9;
    for (const auto& [s, v] : scores)
      if (same_subnet(s, p.subnet)) p.score = v;
    for (const auto* shapes : {&fit_shapes, &held})
      for (const Shape& shape : *shapes) {
        const Latency l = measure_latency(model, shape.batch, shape.seq, p.subnet, o.iters, 1);
        (shapes == &fit_shapes ? p.fitted : p.held_out).push_back({shape, l.p50, l.p99, 0});
      }
    fit_latency_model(p);
    out.subnets.push_back(std::move(p));
    if (progress) progress(i + 1, o.subnets.size(), out.subnets.back().name());
  }
  return out;
}

}  // namespace slimbert::infer
