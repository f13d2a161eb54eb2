// `slimbert compress`: the stages of a method as one resumable job.
#include "slimbert/pipeline/compress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/data/tasks.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/profile.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/pipeline/report.h"
#include "slimbert/report/plot.h"
#include "slimbert/train/progress.h"
#include "slimbert/wid/wid.h"

namespace fs = std::filesystem;

namespace slimbert {

CompressMethod parse_compress_method(const std::string& name) {
  if (name == "dynabert") return CompressMethod::kDynaBert;
  if (name == "wid") return CompressMethod::kWid;
  if (name == "wid+dynabert") return CompressMethod::kWidDynaBert;
  fail("--method: '", name, "' is not one of dynabert, wid, wid+dynabert");
}

std::string to_string(CompressMethod m) {
  switch (m) {
    case CompressMethod::kDynaBert:
      return "dynabert";
    case CompressMethod::kWid:
      return "wid";
    case CompressMethod::kWidDynaBert:
      break;
  }
  return "wid+dynabert";
}

bool OverrideSpec::applies_to(CompressMethod method) const {
  switch (applies) {
    case Applies::kDynaBert:
      return method != CompressMethod::kWid;
    case Applies::kWid:
      return method != CompressMethod::kDynaBert;
    case Applies::kAll:
      break;
  }
  return true;
}

const CompressedModel& CompressResult::chosen() const {
  for (const auto& m : exports)
    if (m.chosen) return m;
  return exports.at(0);
}

namespace {

template <typename T>
nlohmann::json or_null(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

// The options that define a run's results: a resumed run must repeat them.
nlohmann::json signature(const CompressOptions& o) {
  nlohmann::json j = {{"model", o.model_dir},
                      {"task", o.task},
                      {"data", o.data_dir},
                      {"method", to_string(o.method)},
                      {"widths", o.widths},
                      {"depths", o.depths},
                      {"stage3", o.stage3},
                      {"lr", o.lrs},
                      {"epochs", o.epochs},
                      {"batch_size", o.batch_size},
                      {"max_length", o.max_length},
                      {"max_train_examples", o.max_train_examples},
                      {"rewire_examples", o.rewire_examples},
                      {"seed", o.seed}};
  CompressOptions::Overrides::each(o.set, [&](const OverrideSpec& spec, const auto& value) {
    if (spec.applies_to(o.method)) j[spec.key] = or_null(value);
  });
  if (o.method != CompressMethod::kDynaBert) {
    j["corpus"] = o.corpus;
    j["mlm_teacher"] = o.mlm_teacher;
    j["wid_steps"] = o.wid_steps;
    j["target_hidden"] = o.target_hidden;
    j["student_epochs"] = o.student_epochs;
  }
  return j;
}

// An option's value as a resume error shows it; null is an override left at the stage default.
std::string shown(const nlohmann::json& value) {
  return value.is_null() ? "not set" : value.dump();
}

// OUT/compress.json: the run's signature and each finished stage's result, rewritten atomically
// after every stage.
class Ledger {
 public:
  Ledger(const CompressOptions& o) : path_(o.out_dir + "/compress.json") {
    const nlohmann::json sig = signature(o);
    if (fs::exists(path_)) {
      if (!o.resume)
        fail(o.out_dir,
             " holds a compress run (compress.json): --resume continues it, or choose "
             "another --out");
      nlohmann::json saved;
      try {
        saved = nlohmann::json::parse(read_file(path_));
      } catch (const nlohmann::json::exception&) {
        fail(path_, ": not valid JSON (a damaged run directory; remove it to start again)");
      }
      check_schema_version(saved, path_, kLedgerVersion);
      if (!saved.contains("options") || !saved.contains("stages") || !saved["stages"].is_object())
        fail(path_, ": expected {\"options\": ..., \"stages\": {...}}");
      for (const auto& [key, value] : sig.items())
        if (!saved["options"].contains(key) || saved["options"][key] != value)
          fail("--resume: ", key, " is ", shown(value), " but ", o.out_dir, " was started with ",
               saved["options"].contains(key) ? shown(saved["options"][key]) : "none");
      state_ = saved;
    } else {
      if (fs::exists(o.out_dir) && !fs::is_empty(o.out_dir) && !o.resume)
        fail(o.out_dir,
             " exists and is not empty: choose a new --out (compress writes several "
             "directories there)");
      fs::create_directories(o.out_dir);
      state_ = {{kSchemaVersionKey, kLedgerVersion},
                {"options", sig},
                {"stages", nlohmann::json::object()}};
    }
    state_["command"] = o.command;
  }
  bool done(const std::string& stage) const { return state_["stages"].contains(stage); }
  const nlohmann::json& result(const std::string& stage) const {
    return state_["stages"].at(stage);
  }
  void finish(const std::string& stage, nlohmann::json result) {
    state_["stages"][stage] = std::move(result);
    write_file_atomic(path_, state_.dump(2) + "\n");
  }

 private:
  std::string path_;
  nlohmann::json state_;
};

double size_mb(const std::string& dir) {
  std::error_code ec;
  const auto bytes = fs::file_size(weights_path(dir), ec);
  return ec ? 0.0 : static_cast<double>(bytes) / 1e6;
}

// Training leaves optimizer checkpoints and the last epoch's weights beside best/; a finished
// stage keeps only best/ (and its logs).
void drop_training_state(const std::string& dir) {
  for (const char* sub : {"checkpoints", "model"}) remove_tree((fs::path(dir) / sub).string());
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && entry.path().filename().string().rfind("lr-", 0) == 0)
      drop_training_state(entry.path().string());
}

// While alive, the threads are set for a model loaded with `engine` (int8 and oneDNN products
// run on libtorch's pool, OpenBLAS's on its own); training's setting is restored after.
class EngineThreads {
 public:
  EngineThreads(const infer::ModelOptions& engine, const RuntimeConfig& runtime)
      : runtime_(runtime) {
    configure_runtime(infer::runtime_for(engine, runtime));
  }
  ~EngineThreads() { configure_runtime(runtime_); }
  EngineThreads(const EngineThreads&) = delete;
  EngineThreads& operator=(const EngineThreads&) = delete;

 private:
  RuntimeConfig runtime_;
};

// The running stage's name on every progress line while alive.
class StageLabel {
 public:
  explicit StageLabel(const std::string& label) { set_progress_stage(label); }
  ~StageLabel() { set_progress_stage(""); }
  StageLabel(const StageLabel&) = delete;
  StageLabel& operator=(const StageLabel&) = delete;
};

template <typename T>
void set_if(T& field, const std::optional<T>& value) {
  if (value) field = *value;
}

class Pipeline {
 public:
  // `embedding`: the model has no classifier; its sentence vectors are distilled.
  Pipeline(const CompressOptions& o, bool embedding) : o_(o), embedding_(embedding), ledger_(o) {}

  CompressResult run() {
    plan();
    for (size_t k = 0; k < stages_.size(); ++k) {
      const auto& [name, body] = stages_[k];
      const std::string head =
          "compress [" + std::to_string(k + 1) + "/" + std::to_string(stages_.size()) + "] " + name;
      if (ledger_.done(name)) {
        std::cerr << head << ": done before, skipped\n";
        continue;
      }
      std::cerr << head << "\n";
      const auto start = std::chrono::steady_clock::now();
      nlohmann::json result;
      {
        const StageLabel label("compress [" + std::to_string(k + 1) + "/" +
                               std::to_string(stages_.size()) + "]");
        result = body();
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      result["seconds"] = std::round(seconds * 10) / 10;
      ledger_.finish(name, result);
      std::cerr << head << ": done in " << std::round(seconds) << " s\n";
    }
    if (!o_.keep_stages) drop_stage_models();
    return result_from_ledger();
  }

 private:
  // What a user looks at stays (model/, exports/, report.html, grid/, each stage's logs); the
  // stages' own models go once the exports exist: a finished run is not resumed into them.
  void drop_stage_models() const {
    for (const char* stage : {"rewired", "stage1", "stage2", "stage3", "wid", "student"}) {
      const fs::path dir = out(stage);
      if (!fs::exists(dir)) continue;
      std::vector<fs::path> doomed;
      for (const auto& e : fs::recursive_directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("model.safetensors", 0) == 0 || name == "optimizer.safetensors")
          doomed.push_back(e.path());
      }
      for (const auto& p : doomed) remove_tree(p.string());
    }
  }

  std::string out(const std::string& sub) const { return (fs::path(o_.out_dir) / sub).string(); }

  nlohmann::json read_grid() const {
    const std::string path = out("grid/grid.json");
    nlohmann::json grid = read_json_file(path);
    check_schema_version(grid, path, kGridVersion);
    return grid;
  }

  // `base` with this run's task, data and loop settings (a stage's own defaults stay).
  FinetuneOptions task_options(FinetuneOptions f, const std::string& model_dir) const {
    f.model_dir = model_dir;
    f.task = o_.task;
    f.data_dir = o_.data_dir;
    f.epochs = o_.epochs;
    f.batch_size = o_.batch_size;
    f.max_length = o_.max_length;
    f.seed = o_.seed;
    f.log_every = o_.log_every;
    f.resume = o_.resume;
    f.skip_bad_rows = o_.skip_bad_rows;
    f.max_train_examples = o_.max_train_examples;
    set_if(f.warmup_fraction, o_.set.warmup);
    set_if(f.weight_decay, o_.set.weight_decay);
    set_if(f.clip, o_.set.clip);
    return f;
  }

  // A training stage with the learning rate chosen on dev; its result names the best model.
  nlohmann::json train_stage(const std::string& dir,
                             const std::function<FinetuneResult(double, const std::string&)>& fn) {
    const LrChoice c = choose_lr_on_dev(dir, o_.lrs, fn);
    if (!c.result.finished) fail("stage stopped before its end at step ", c.result.step);
    drop_training_state(dir);
    return {{"model", c.dir + "/best"},
            {"lr", c.lr},
            {"dev", c.result.best_dev.metrics.at("main")},
            {"best_step", c.result.best_step}};
  }

  nlohmann::json dyna_stage(DynaStage stage, const std::string& dir, const std::string& from,
                            const std::string& teacher) {
    return train_stage(dir, [&](double lr, const std::string& run_dir) {
      DynaTrainOptions d = stage_defaults(stage);
      d.train = task_options(d.train, from);
      d.train.lr = lr;
      d.train.out_dir = run_dir;
      d.teacher_dir = teacher;
      d.widths = o_.widths;
      d.depths = o_.depths;
      const CompressOptions::Overrides& set = o_.set;
      if (stage != DynaStage::kFinetune) set_if(d.lambda1, set.lambda1);
      if (stage == DynaStage::kWidth) set_if(d.lambda2, set.stage1_lambda2);
      if (stage == DynaStage::kWidthDepth) {
        set_if(d.lambda2, set.stage2_lambda2);
        set_if(d.same_width_teacher, set.same_width_teacher);
      }
      return dynabert_train(d);
    });
  }

  std::string model_of(const std::string& stage) const {
    return ledger_.result(stage).at("model").get<std::string>();
  }

  void plan() {
    const bool wid = o_.method != CompressMethod::kDynaBert;
    const bool dyna = o_.method != CompressMethod::kWid;
    // The task model the DynaBERT stages distil from: the user's, or the fine-tuned student.
    auto task_teacher = [this, wid] { return wid ? model_of("student") : o_.model_dir; };
    if (wid) {
      stages_.push_back({"wid", [this] {
                           WidOptions w = short_run_wid_options();
                           w.train.init_dir = o_.mlm_teacher;
                           w.train.shards_dir = o_.corpus;
                           w.train.out_dir = out("wid");
                           w.train.steps = o_.wid_steps;
                           w.train.batch_size = o_.batch_size;
                           w.train.seed = o_.seed;
                           w.train.log_every = o_.log_every;
                           // One validation, at the end (it scores the merged student too);
                           // checkpoints four times a run, for --resume.
                           w.train.eval_every = o_.wid_steps;
                           w.train.eval_batches = 5;
                           w.train.save_every = std::max<int64_t>(1, o_.wid_steps / 4);
                           w.train.resume = o_.resume;
                           w.target.hidden = target_hidden();
                           const CompressOptions::Overrides& set = o_.set;
                           set_if(w.train.lr, set.wid_lr);
                           set_if(w.compactor_lr, set.compactor_lr);
                           set_if(w.surgery.lambda, set.wid_lambda);
                           set_if(w.schedule.zero_by, set.zero_by);
                           set_if(w.schedule.w_step, set.w_step);
                           w.schedule.strategy = strategy();
                           const WidResult r = wid_train(w);
                           if (!r.train.finished) fail("WID stopped at step ", r.train.step);
                           remove_tree(out("wid/checkpoints"));
                           return nlohmann::json{{"model", r.student_dir},
                                                 {"hidden", r.student.hidden_size},
                                                 {"mlm_loss", r.student_validation.loss}};
                         }});
      stages_.push_back({"student", [this] {
                           return train_stage(
                               out("student"), [&](double lr, const std::string& dir) {
                                 FinetuneOptions f = task_options({}, model_of("wid"));
                                 f.epochs = o_.student_epochs;
                                 f.lr = lr;
                                 f.out_dir = dir;
                                 f.distil_from = o_.model_dir;
                                 set_if(f.kd_weight, o_.set.kd_weight);
                                 set_if(f.kd_temperature, o_.set.kd_temperature);
                                 return finetune(f);
                               });
                         }});
    }
    if (dyna) {
      stages_.push_back({"rewire", [this, task_teacher] {
                           RewireOptions r;
                           r.model_dir = task_teacher();
                           r.task = o_.task;
                           r.data_dir = o_.data_dir;
                           r.out_dir = out("rewired");
                           r.examples = o_.rewire_examples;
                           r.batch_size = o_.batch_size;
                           r.max_length = o_.max_length;
                           r.seed = o_.seed;
                           r.skip_bad_rows = o_.skip_bad_rows;
                           const RewireResult res = rewire_model(r);
                           return nlohmann::json{{"model", r.out_dir}, {"examples", res.examples}};
                         }});
      stages_.push_back({"stage1-width", [this, task_teacher] {
                           return dyna_stage(DynaStage::kWidth, out("stage1"), model_of("rewire"),
                                             task_teacher());
                         }});
      stages_.push_back({"stage2-width-depth", [this] {
                           const std::string w = model_of("stage1-width");
                           return dyna_stage(DynaStage::kWidthDepth, out("stage2"), w, w);
                         }});
      if (stage3())
        stages_.push_back({"stage3-labels", [this] {
                             return dyna_stage(DynaStage::kFinetune, out("stage3"),
                                               model_of("stage2-width-depth"), "");
                           }});
    }
    final_stage_ = !dyna ? "student" : stage3() ? "stage3-labels" : "stage2-width-depth";
    stages_.push_back({"grid", [this] { return grid(); }});
    stages_.push_back({"profile", [this] { return profile(); }});
    stages_.push_back({"export", [this] { return exports(); }});
    stages_.push_back({"report", [this] { return report(); }});
  }

  bool stage3() const { return o_.stage3 && !embedding_; }

  WidStrategy strategy() const {
    return o_.set.strategy ? parse_wid_strategy(*o_.set.strategy)
                           : short_run_wid_options().schedule.strategy;
  }

  int64_t target_hidden() const {
    const BertConfig t = load_config_dir(o_.mlm_teacher);
    const std::vector<int64_t> valid = valid_target_hiddens(t, strategy());
    const int64_t want = o_.target_hidden > 0 ? o_.target_hidden : t.hidden_size / 2;
    int64_t best = valid.front();
    for (int64_t v : valid)
      if (std::abs(v - want) < std::abs(best - want)) best = v;
    return o_.target_hidden > 0 ? o_.target_hidden : best;  // an explicit one is checked by WID
  }

  std::vector<double> widths() const {
    return o_.method == CompressMethod::kWid ? std::vector<double>{1.0} : o_.widths;
  }
  std::vector<double> depths() const {
    return o_.method == CompressMethod::kWid ? std::vector<double>{1.0} : o_.depths;
  }

  // The fp32 engine the grid and the profile time, and so the one the server runs (it follows
  // the profile): --gemm auto's measurement on the model's shapes, made once.
  const infer::ModelOptions& fp32_engine() {
    if (!fp32_engine_) {
      fp32_engine_ = infer::configure_engine(load_config_dir(out("model")),
                                             {false, widths(), infer::Gemm::kAuto}, o_.runtime);
      configure_runtime(o_.runtime);
    }
    return *fp32_engine_;
  }

  GridOptions grid_options() const {
    GridOptions g;
    g.task = o_.task;
    g.data_dir = o_.data_dir;
    g.widths = widths();
    g.depths = depths();
    g.max_length = o_.max_length;
    g.latency_batches = {1};
    g.latency_seq = o_.max_length;
    g.latency_iters = o_.latency_iters;
    g.skip_bad_rows = o_.skip_bad_rows;
    return g;
  }

  // The final model in OUT/model (every sub-network; the server slices it per request), scored
  // and timed over the grid, the teacher beside it.
  nlohmann::json grid() {
    write_dir_atomic(out("model"), [&](const std::string& staging) {
      fs::copy(model_of(final_stage_), staging, fs::copy_options::recursive);
    });
    std::vector<GridSeries> series;
    const std::string name = o_.method == CompressMethod::kWid ? "WID student" : "DynaBERT";
    GridOptions g = grid_options();
    g.gemm = fp32_engine().gemm;
    GridOptions t = g;
    t.widths = {1.0};
    t.depths = {1.0};
    {
      EngineThreads threads(fp32_engine(), o_.runtime);
      series.push_back({name, evaluate_grid(out("model"), g, name)});
    }
    if (o_.int8) {
      GridOptions q = grid_options();
      q.int8 = true;
      EngineThreads threads({true, q.widths}, o_.runtime);
      series.push_back({name + " int8", evaluate_grid(out("model"), q, name + " int8")});
    }
    {
      EngineThreads threads(fp32_engine(), o_.runtime);
      series.push_back({"teacher", evaluate_grid(o_.model_dir, t, "teacher")});
    }
    write_grid_report(series, TaskSpec::make(o_.task, o_.data_dir).display_name(), out("grid"));
    return {{"model", out("model")}, {"grid", out("grid/grid.json")}};
  }

  nlohmann::json profile() {
    nlohmann::json written = nlohmann::json::array();
    for (bool int8 : {false, true}) {
      if (int8 && !o_.int8) continue;
      const infer::ModelOptions engine = int8 ? infer::ModelOptions{true, widths()} : fp32_engine();
      EngineThreads threads(engine, o_.runtime);
      std::vector<SubNet> subnets;
      for (double d : depths())
        for (double w : widths()) subnets.push_back({w, d});
      const auto model = infer::InferenceModel::load(out("model"), engine);
      infer::ProfileOptions po;
      po.subnets = subnets;
      po.iters = std::max<int64_t>(2, o_.latency_iters);
      po.grid_json = out("grid/grid.json");
      const infer::LatencyProfile p = infer::measure_profile(
          *model, po, [](size_t done, size_t total, const std::string& name) {
            std::cerr << "profile: " << done << "/" << total << " " << name << "\n";
          });
      const std::string path = out(int8 ? "model/profile-int8.json" : "model/profile.json");
      p.save(path);
      written.push_back(path);
    }
    return {{"profiles", written}};
  }

  // The Pareto-optimal sub-networks (dev score against batch-1 latency) as static models, and
  // the one chosen: under --budget-ms the profile's choice, else the fastest that keeps 99% of
  // the teacher's dev score (the most accurate when none does).
  nlohmann::json exports() {
    const nlohmann::json grid = read_grid();
    std::vector<PlotPoint> points;
    std::vector<SubNet> subnets;
    double teacher = 0;
    for (const auto& s : grid.at("series")) {
      const std::string name = s.at("name").get<std::string>();
      for (const auto& p : s.at("points")) {
        const double dev = p.at("scores").value("dev", 0.0);
        if (name == "teacher") teacher = dev;
        if (name == "teacher" || name.find("int8") != std::string::npos) continue;
        const double ms = p.at("latency_p50_ms").begin()->get<double>();
        points.push_back({ms, dev, ""});
        subnets.push_back({p.at("width").get<double>(), p.at("depth").get<double>()});
      }
    }
    if (points.empty()) fail(out("grid/grid.json"), ": no scored sub-network");
    std::vector<size_t> keep = pareto_front(points);
    size_t chosen = keep.front();
    if (o_.budget_ms > 0) {
      const infer::LatencyProfile p = infer::LatencyProfile::load(out("model/profile.json"));
      const SubNet s = p.choose(o_.budget_ms, {1, o_.max_length}).subnet;
      for (size_t i = 0; i < subnets.size(); ++i)
        if (same_subnet(subnets[i], s)) chosen = i;
      if (std::find(keep.begin(), keep.end(), chosen) == keep.end()) keep.push_back(chosen);
    } else {
      chosen = *std::max_element(keep.begin(), keep.end(),
                                 [&](size_t a, size_t b) { return points[a].y < points[b].y; });
      for (size_t i : keep)  // sorted by latency: the first that keeps 99% is the fastest
        if (points[i].y >= 0.99 * teacher) {
          chosen = i;
          break;
        }
    }
    nlohmann::json models = nlohmann::json::array();
    for (size_t i : keep) {
      const std::string dir = out("exports/" + subnet_name(subnets[i]));
      if (o_.method == CompressMethod::kWid)
        write_dir_atomic(dir, [&](const std::string& staging) {
          for (const auto& e : fs::directory_iterator(out("model")))
            if (e.path().filename().string().rfind("profile", 0) != 0)
              fs::copy(e.path(), fs::path(staging) / e.path().filename(),
                       fs::copy_options::recursive);
        });
      else
        export_subnet(out("model"), subnets[i], dir);
      models.push_back({{"width", subnets[i].width},
                        {"depth", subnets[i].depth},
                        {"dir", dir},
                        {"dev", points[i].y},
                        {"latency_ms", points[i].x},
                        {"size_mb", size_mb(dir)},
                        {"chosen", i == chosen}});
    }
    return {{"models", models}, {"teacher_dev", teacher}};
  }

  nlohmann::json report() {
    ReportInput in;
    in.task = TaskSpec::make(o_.task, o_.data_dir).display_name();
    in.method = to_string(o_.method);
    in.command = o_.command;
    in.teacher_dir = o_.model_dir;
    in.model_dir = out("model");
    in.grid = read_grid();
    in.exports = ledger_.result("export").at("models");
    in.budget_ms = o_.budget_ms;
    in.max_length = o_.max_length;
    const BertConfig c = load_config_dir(out("model"));
    in.hidden_size = c.hidden_size;
    in.head_size = c.attention_head_size();
    for (const char* stage : {"wid", "student", "rewire", "stage1-width", "stage2-width-depth",
                              "stage3-labels", "grid", "profile", "export"})
      if (ledger_.done(stage)) in.stages.push_back({stage, ledger_.result(stage)});
    const std::string path = out("report.html");
    write_file_atomic(path, compress_report_html(in));
    return {{"report", path}};
  }

  CompressResult result_from_ledger() const {
    CompressResult r;
    r.model_dir = out("model");
    r.report = out("report.html");
    r.teacher_dev = ledger_.result("export").at("teacher_dev").get<double>();
    for (const auto& m : ledger_.result("export").at("models")) {
      CompressedModel c;
      c.subnet = {m.at("width").get<double>(), m.at("depth").get<double>()};
      c.dir = m.at("dir").get<std::string>();
      c.dev = m.at("dev").get<double>();
      c.latency_ms = m.at("latency_ms").get<double>();
      c.size_mb = m.at("size_mb").get<double>();
      c.chosen = m.at("chosen").get<bool>();
      r.exports.push_back(c);
    }
    r.metric = embedding_ ? "spearman" : TaskSpec::make(o_.task, o_.data_dir).main_metric;
    return r;
  }

  const CompressOptions& o_;
  bool embedding_;
  Ledger ledger_;
  std::vector<std::pair<std::string, std::function<nlohmann::json()>>> stages_;
  std::string final_stage_;
  std::optional<infer::ModelOptions> fp32_engine_;
};

}  // namespace

CompressResult compress(const CompressOptions& options) {
  if (options.method != CompressMethod::kDynaBert &&
      (options.corpus.empty() || options.mlm_teacher.empty()))
    fail("--method ", to_string(options.method),
         " needs --corpus (MLM shards) and --mlm-teacher (the pretrained masked LM the task model "
         "was fine-tuned from)");
  if (options.lrs.empty()) fail("--lr: no learning rate");
  const bool embedding = !has_classifier_weights(options.model_dir);
  if (embedding) {
    // An embedding model: DynaBERT distils its sentence vectors; WID's student and DynaBERT's
    // stage 3 train a classifier on the labels.
    if (options.method != CompressMethod::kDynaBert)
      fail(options.model_dir,
           ": an embedding model (no classification head) is compressed with "
           "--method dynabert; --method ",
           to_string(options.method), " fine-tunes a classifier student");
    if (options.stage3)
      std::cerr << "compress: " << options.model_dir
                << " is an embedding model (no classification head): its sentence vectors are "
                   "distilled; stage 3, which trains a classifier on the labels, is skipped\n";
  }
  const CompressOptions::Overrides& s = options.set;
  if (options.method == CompressMethod::kWid &&
      (s.lambda1 || s.stage1_lambda2 || s.stage2_lambda2 || s.same_width_teacher))
    fail(
        "--lambda1, --stage1-lambda2, --stage2-lambda2 and --teacher-width set the DynaBERT "
        "stages, which --method wid does not run");
  if (options.method == CompressMethod::kDynaBert &&
      (s.kd_weight || s.kd_temperature || s.wid_lr || s.compactor_lr || s.wid_lambda || s.zero_by ||
       s.w_step || s.strategy))
    fail(
        "--kd-weight, --kd-temperature, --wid-lr, --compactor-lr, --wid-lambda, --zero-by, "
        "--w-step and --strategy set the WID stages, which --method dynabert does not run");
  Pipeline pipeline(options, embedding);
  return pipeline.run();
}

}  // namespace slimbert
