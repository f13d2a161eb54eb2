// Hostile and corrupted inputs found by fuzzing and by hand: each one a clear error that names
// the file and the field, never a crash, a raw library message or an allocation sized by a lie.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "mlm_world.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/data/corpus.h"
#include "slimbert/data/tasks.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/profile.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/safetensors.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/config.h"
#include "slimbert/text/tokenizer.h"
#include "slimbert/train/checkpointing.h"
#include "slimbert/train/pretrain.h"
#include "slimbert/train/progress.h"
#include "slimbert/train/state.h"
#include "test_util.h"

namespace slimbert {
namespace fs = std::filesystem;
namespace {

using nlohmann::json;
using test::TempDir;

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  write_file_atomic(path, text);
}

// ---- Task files ---------------------------------------------------------------------------------

// CoLA's text is its fourth field: rows with fewer fields were read past their end (a segfault
// with one field, std::bad_alloc with two).
TEST(HostileTaskFiles, GlueRowsWithTooFewColumnsNameFileLineAndCount) {
  TempDir d;
  std::string one, two;
  for (int i = 0; i < 40; ++i) one += "x\n", two += "x\ty\n";
  for (const std::string& rows : {one, two}) {
    write(d / "cola/train.tsv", rows);
    const TaskSpec spec = TaskSpec::make("cola", d / "cola");
    EXPECT_ERROR_CONTAINS(spec.load("train"), "train.tsv:1", "expected 4 columns");
    // Skipping bad rows skips every one of them.
    const TaskSpec skip = TaskSpec::make("cola", d / "cola", /*skip_bad_rows=*/true);
    const TaskData data = skip.load("train");
    EXPECT_EQ(data.examples.size(), 0u);
    EXPECT_EQ(data.skipped_rows, 40);
  }
  // A header shorter than the layout reads (MRPC reads five columns).
  write(d / "mrpc/train.tsv", "Quality\t#1 ID\n1\t2\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("mrpc", d / "mrpc").load("train"), "train.tsv:1",
                        "header has 2 tab-separated columns", "mrpc layout reads 5");
  // Every GLUE layout, for each split, on a file of one-field rows.
  for (const std::string& name : TaskSpec::glue_names()) {
    TempDir g;
    const TaskSpec spec = TaskSpec::make(name, g.path());
    for (const std::string split : {"train", "dev", "test"}) {
      write(spec.path(split), "a\nb\nc\n");
      EXPECT_ERROR_CONTAINS(spec.load(split), spec.path(split), "columns");
    }
  }
}

TEST(HostileTaskFiles, InvalidUtf8InAHeaderOrALabel) {
  TempDir d;
  write(d / "h/train.tsv", "\xff\xfe\tlabel\nx\ty\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "h"), "train.tsv:1", "header needs a text column",
                        "\xef\xbf\xbd");
  // A label is written into config.json (id2label): it must be UTF-8.
  write(d / "l/train.tsv", "text\tlabel\na\tpos\nb\t\xc3\x28\n");
  EXPECT_ERROR_CONTAINS(TaskSpec::make("tsv", d / "l"), "train.tsv:3", "label is not valid UTF-8");
}

// ---- config.json and weights ------------------------------------------------------------------

TEST(HostileConfig, SizesAreBoundedBeforeAnythingIsAllocated) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_ERROR_CONTAINS(BertConfig::from_json(json{{"num_labels", 2000000000}}, "c.json"), "c.json",
                        "'num_labels'", "at most 65536");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                            "max_position_embeddings", "type_vocab_size", "num_attention_heads"})
    EXPECT_ERROR_CONTAINS(BertConfig::from_json(json{{field, 2000000000000LL}}, "c.json"),
                          std::string("'") + field + "'", "at most");
  EXPECT_ERROR_CONTAINS(
      BertConfig::from_json(json{{"vocab_size", 18446744073709551615ULL}}, "c.json"), "vocab_size");
  // Labels named one by one are backed by the file itself.
  json many = json::object();
  for (int i = 0; i < 70000; ++i) many[std::to_string(i)] = "l" + std::to_string(i);
  EXPECT_EQ(BertConfig::from_json(json{{"id2label", many}}).num_labels(), 70000);
}

TEST(HostileConfig, ConfigSizesMustBeThoseOfTheWeights) {
  const BertConfig c = test::tiny_config(64, 32);
  BertForSequenceClassification model(c);
  const TensorMap weights = state_dict(*model);
  check_config_matches_weights(c, weights, "w");
  auto expect_mismatch = [&](BertConfig bad, const std::string& field) {
    EXPECT_ERROR_CONTAINS(check_config_matches_weights(bad, weights, "w.safetensors"),
                          "w.safetensors", "config.json says " + field);
  };
  BertConfig bad = c;
  bad.vocab_size = 1 << 20;
  expect_mismatch(bad, "vocab_size");
  // Smaller than the weights: left to load_state, which names both shapes.
  bad.vocab_size = 10;
  check_config_matches_weights(bad, weights, "w");
  bad = c;
  bad.hidden_size = 64;
  bad.num_attention_heads = 2;
  expect_mismatch(bad, "hidden_size");
  bad = c;
  bad.num_hidden_layers = 900;
  expect_mismatch(bad, "num_hidden_layers");
  bad = c;
  bad.set_num_labels(5000);
  expect_mismatch(bad, "num_labels");
  bad = c;
  bad.max_position_embeddings = 100000;
  expect_mismatch(bad, "max_position_embeddings");
}

// numel x dtype size wrapped around 2^64 and passed the byte-count check.
TEST(HostileSafetensors, ByteCountOverflowIsCaught) {
  TempDir d;
  const std::string header =
      R"({"t":{"dtype":"I64","shape":[2147483648,2147483648],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write(d / "x.safetensors", bytes + header);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(d / "x.safetensors"), "x.safetensors", "tensor 't'",
                        "needs more than 2^64 bytes");
}

// ---- Tokenizer ----------------------------------------------------------------------------------

TEST(HostileTokenizerOptions, NegativeOrHugeMaxLengthIsAnError) {
  const Tokenizer t(Vocab::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"}), {});
  EncodeOptions o;
  o.padding = Padding::kMaxLength;
  for (int64_t bad : {int64_t{-1}, int64_t{-3}, int64_t{1} << 40}) {
    o.max_length = bad;
    EXPECT_ERROR_CONTAINS(t.encode("a a", std::nullopt, o), "max_length must be in");
    std::vector<Encoding> batch{t.encode("a")};
    EXPECT_ERROR_CONTAINS(t.pad(batch, Padding::kMaxLength, bad), "max_length must be in");
  }
  o.max_length = 5;
  EXPECT_EQ(t.encode("a", std::nullopt, o).input_ids.size(), 5u);
}

TEST(HostileTokenizerOptions, VocabularyThatIsNotUtf8) {
  TempDir d;
  write(d / "vocab.txt", "[PAD]\n[UNK]\n\xc0\xaf\n");
  EXPECT_ERROR_CONTAINS(Vocab::load(d / "vocab.txt"), "vocab.txt:3", "not valid UTF-8");
}

// ---- Trainer state ------------------------------------------------------------------------------

RunSignature signature() {
  RunSignature run;
  run.command = "pretrain";
  run.defining = {{"seed", 0}, {"batch_size", 8}, {"steps", 100}};
  run.adjustable = {{"lr", 1e-3}};
  return run;
}

TEST(HostileTrainerState, EveryFieldIsCheckedWithItsName) {
  const RunSignature run = signature();
  const StateLimits limits{100, 100, 50};
  const json good = trainer_state_json({10, 1, 8}, run);
  std::vector<std::string> notes;
  const TrainerCursor c = read_trainer_state(good, run, limits, "s.json", &notes);
  EXPECT_EQ(c.step, 10);
  EXPECT_EQ(c.epoch, 1);
  EXPECT_EQ(c.offset, 8);
  EXPECT_TRUE(notes.empty());

  EXPECT_ERROR_CONTAINS(read_trainer_state(json::object(), run, limits, "s.json", &notes), "s.json",
                        "missing field 'step'");
  EXPECT_ERROR_CONTAINS(read_trainer_state(json::array(), run, limits, "s.json", &notes), "s.json",
                        "expected a JSON object");
  auto with = [&](const char* key, const json& value) {
    json s = good;
    s[key] = value;
    return s;
  };
  EXPECT_ERROR_CONTAINS(read_trainer_state(with("step", "10"), run, limits, "s.json", &notes),
                        "field 'step'", "an integer in [0, 100]");
  EXPECT_ERROR_CONTAINS(read_trainer_state(with("step", -5), run, limits, "s.json", &notes),
                        "field 'step'");
  EXPECT_ERROR_CONTAINS(read_trainer_state(with("step", 101), run, limits, "s.json", &notes),
                        "field 'step'");
  EXPECT_ERROR_CONTAINS(read_trainer_state(with("epoch", -1), run, limits, "s.json", &notes),
                        "field 'epoch'");
  EXPECT_ERROR_CONTAINS(
      read_trainer_state(with("offset", -13535555), run, limits, "s.json", &notes),
      "field 'offset'", "[0, 50]");
  EXPECT_ERROR_CONTAINS(
      read_trainer_state(with("offset", 18446744073709551615ULL), run, limits, "s.json", &notes),
      "field 'offset'");
  EXPECT_ERROR_CONTAINS(read_trainer_state(with("run", 3), run, limits, "s.json", &notes),
                        "field 'run'", "expected a JSON object");
}

TEST(HostileTrainerState, AnotherRunOrAnotherCommandIsRefused) {
  const RunSignature run = signature();
  const StateLimits limits{100, 100, 50};
  std::vector<std::string> notes;
  RunSignature other = run;
  other.defining["seed"] = 1;
  EXPECT_ERROR_CONTAINS(
      read_trainer_state(trainer_state_json({1, 0, 0}, other), run, limits, "s.json", &notes),
      "s.json", "other options", "seed 1 -> 0");
  other = run;
  other.command = "finetune spam";
  EXPECT_ERROR_CONTAINS(
      read_trainer_state(trainer_state_json({1, 0, 0}, other), run, limits, "s.json", &notes),
      "written by 'finetune spam', not by 'pretrain'");
  // A changed learning rate is allowed and reported.
  other = run;
  other.adjustable["lr"] = 5e-4;
  read_trainer_state(trainer_state_json({1, 0, 0}, other), run, limits, "s.json", &notes);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("lr 0.0005 -> 0.001"), std::string::npos) << notes[0];
}

// A pretraining run stopped after 4 of its 8 steps; returns the options that resume it.
PretrainOptions stopped_run(const std::string& name) {
  PretrainOptions o = test::world().options(name);
  o.stop_after = 4;
  pretrain(o);
  o.stop_after = 0;
  o.resume = true;
  return o;
}

TEST(HostileTrainerState, ResumeRefusesAChangedRunAndACorruptedState) {
  const test::World& w = test::world();
  const PretrainOptions o = stopped_run("refuse");
  for (auto change : std::vector<std::function<void(PretrainOptions&)>>{
           [](PretrainOptions& x) { x.seed = 7; }, [](PretrainOptions& x) { x.batch_size = 4; },
           [](PretrainOptions& x) { x.steps = 12; }}) {
    PretrainOptions changed = o;
    change(changed);
    EXPECT_ERROR_CONTAINS(pretrain(changed), "state.json", "other options",
                          "resume with the options it was started with");
  }
  // Another command's checkpoint.
  struct Plain : MlmMethod {
    BertForMaskedLM& lm;
    Plain(BertForMaskedLM& m, const BertConfig& c, const PretrainOptions& po, const Tokenizer& t)
        : MlmMethod(*m, c, po, t), lm(m) {}
    MlmOutput forward(const MlmBatch& batch) override { return mlm_step(lm, batch); }
  };
  BertForMaskedLM model = load_masked_lm(w.init);
  const BertConfig config = load_config_dir(w.init);
  AdamW optimizer(bert_param_groups(named_parameters(*model), 1e-3, 0.0), AdamOptions{});
  Plain method(model, config, o, w.tokenizer);
  EXPECT_ERROR_CONTAINS(
      train_mlm("wid", o, Trainee{*model, optimizer, config, w.tokenizer}, method),
      "written by 'pretrain', not by 'wid'");
  // A corrupted state file.
  const std::string state = latest_checkpoint(o.out_dir) + "/trainer_state/state.json";
  const std::string saved = read_file(state);
  for (const std::string& text :
       {std::string("{}"), std::string("{\"step\": "), saved.substr(0, saved.size() / 2)}) {
    write_file_atomic(state, text);
    EXPECT_ERROR_CONTAINS(pretrain(o), state);
  }
  json j = json::parse(saved);
  j["step"] = -5;
  write_file_atomic(state, j.dump());
  EXPECT_ERROR_CONTAINS(pretrain(o), state, "field 'step'");
  j = json::parse(saved);
  j["offset"] = 1LL << 40;
  write_file_atomic(state, j.dump());
  EXPECT_ERROR_CONTAINS(pretrain(o), state, "field 'offset'");
}

TEST(HostileTrainerState, CorruptedOptimizerAndGeneratorStates) {
  const PretrainOptions o = stopped_run("tensors");
  const std::string dir = latest_checkpoint(o.out_dir) + "/trainer_state";
  const TensorMap optimizer = load_safetensors(dir + "/optimizer.safetensors");
  const TensorMap rng = load_safetensors(dir + "/rng.safetensors");
  auto with = [](TensorMap m, const std::string& name, const at::Tensor& t) {
    m[name] = t;
    return m;
  };
  save_safetensors(dir + "/optimizer.safetensors", with(optimizer, "step", at::tensor({-3})));
  EXPECT_ERROR_CONTAINS(pretrain(o), "optimizer 'step' must be one non-negative integer");
  save_safetensors(dir + "/optimizer.safetensors",
                   with(optimizer, "step", at::ones({2}, at::kLong)));
  EXPECT_ERROR_CONTAINS(pretrain(o), "optimizer 'step'");
  std::string moment;
  for (const auto& [name, t] : optimizer)
    if (name.rfind("exp_avg_sq/", 0) == 0) moment = name;
  ASSERT_FALSE(moment.empty());
  save_safetensors(dir + "/optimizer.safetensors", with(optimizer, moment, at::zeros({3})));
  EXPECT_ERROR_CONTAINS(pretrain(o), "moments of '", "have shape [3]");
  save_safetensors(dir + "/optimizer.safetensors", optimizer);
  save_safetensors(dir + "/rng.safetensors", with(rng, "torch_cpu", at::zeros({7}, at::kByte)));
  EXPECT_ERROR_CONTAINS(pretrain(o), "rng.safetensors", "holds 7 bytes");
  save_safetensors(dir + "/rng.safetensors", rng);
  EXPECT_TRUE(pretrain(o).finished);
}

TEST(HostileShards, MalformedShardIndex) {
  const test::World& w = test::world();
  TempDir d;
  fs::copy(w.shards, d / "s");
  json meta = json::parse(read_file(d / "s/shards.json"));
  const json saved = meta;
  meta["train"]["files"] = json::array({3});
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_ERROR_CONTAINS(ShardSet::open(d / "s", "train"), "shards.json", "field 'files'");
  meta = saved;
  meta["train"]["files"] = json::array({"../../etc/passwd"});
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_ERROR_CONTAINS(ShardSet::open(d / "s", "train"), "field 'files'", "same directory");
  meta = saved;
  meta["seq_len"] = "32";
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_ERROR_CONTAINS(ShardSet::open(d / "s", "train"), "field 'seq_len'");
  meta = saved;
  meta.erase("train");
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_ERROR_CONTAINS(ShardSet::open(d / "s", "train"), "no split 'train'");
}

// Every state file slimbert reads back is stamped with its schema_version; a file from a newer
// slimbert is refused by name before its fields are read, and an unstamped one reads as version 1.
TEST(HostileSchemaVersion, StateFilesAreStampedAndANewerVersionIsRefused) {
  const RunSignature run = signature();
  const StateLimits limits{100, 100, 50};
  std::vector<std::string> notes;
  json state = trainer_state_json({10, 1, 8}, run);
  EXPECT_EQ(state.at("schema_version"), 1);
  state["schema_version"] = 2;
  EXPECT_ERROR_CONTAINS(read_trainer_state(state, run, limits, "s.json", &notes), "s.json",
                        "schema_version 2 is newer than this slimbert reads (at most 1)");
  state["schema_version"] = "1";
  EXPECT_ERROR_CONTAINS(read_trainer_state(state, run, limits, "s.json", &notes), "s.json",
                        "field 'schema_version'", "a positive integer");
  state.erase("schema_version");
  EXPECT_EQ(read_trainer_state(state, run, limits, "s.json", &notes).step, 10);

  const test::World& w = test::world();
  TempDir d;
  fs::copy(w.shards, d / "s");
  json meta = json::parse(read_file(d / "s/shards.json"));
  EXPECT_EQ(meta.at("schema_version"), 1);
  meta["schema_version"] = 7;
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_ERROR_CONTAINS(ShardSet::open(d / "s", "train"), "shards.json", "schema_version 7");
  meta.erase("schema_version");
  write_file_atomic(d / "s/shards.json", meta.dump());
  EXPECT_GT(ShardSet::open(d / "s", "train").size(), 0);

  infer::LatencyProfile profile;
  profile.model = "m";
  infer::SubnetProfile sp;
  sp.tail = 1.5;
  profile.subnets.push_back(sp);
  json pj = profile.to_json();
  EXPECT_EQ(pj.at("schema_version"), 1);
  EXPECT_EQ(infer::LatencyProfile::from_json(pj, "p.json").subnets.size(), 1u);
  pj["schema_version"] = 3;
  EXPECT_ERROR_CONTAINS(infer::LatencyProfile::from_json(pj, "p.json"), "p.json",
                        "schema_version 3");

  GridPoint point;
  point.scores["dev"] = 0.5;
  point.latency_p50_ms[1] = 2.0;
  write_grid_report({{"model", {point}}}, "task", d / "grid");
  json grid = json::parse(read_file(d / "grid/grid.json"));
  EXPECT_EQ(grid.at("schema_version"), 1);
  // A profile scored from a newer grid report refuses it before measuring anything.
  grid["schema_version"] = 2;
  write_file_atomic(d / "grid/grid.json", grid.dump());
  infer::ProfileOptions po;
  po.subnets = {SubNet{}};
  po.grid_json = d / "grid/grid.json";
  const auto model = infer::InferenceModel::load(w.init);
  EXPECT_ERROR_CONTAINS(infer::measure_profile(*model, po, {}), "grid.json", "schema_version 2");
}

// A kill leaves staging directories and metrics lines past the last checkpoint: the resumed run
// removes the first and rewrites the second, and ends with the same metrics as a straight run.
TEST(HostileTrainerState, ResumeCleansStagingAndTruncatesMetrics) {
  const test::World& w = test::world();
  PretrainOptions straight = w.options("clean-straight");
  pretrain(straight);
  PretrainOptions o = w.options("clean");
  o.stop_after = 4;
  pretrain(o);
  // What a kill during the next checkpoint write, after two more logged steps, leaves behind.
  const std::string stale = o.out_dir + "/checkpoints/step-0000008.tmp-999999-abc";
  fs::create_directories(stale + "/trainer_state");
  write_file_atomic(stale + "/model.safetensors", "partial");
  {
    std::FILE* f = std::fopen((o.out_dir + "/metrics.jsonl").c_str(), "a");
    std::fputs("{\"step\":5,\"loss\":1}\n{\"step\":6,\"lo", f);
    std::fclose(f);
  }
  o.stop_after = 0;
  o.resume = true;
  pretrain(o);
  EXPECT_FALSE(fs::exists(stale));
  auto steps_of = [](const std::string& path) {
    std::vector<std::pair<int64_t, std::string>> out;
    for (const std::string& line : split_lines(read_file(path), false)) {
      const json j = json::parse(line);  // every line is JSON
      out.emplace_back(j["step"].get<int64_t>(), j.value("event", std::string("log")));
    }
    return out;
  };
  auto resumed = steps_of(o.out_dir + "/metrics.jsonl");
  // The stop leaves one "stopped" line the straight run does not have.
  resumed.erase(std::remove_if(resumed.begin(), resumed.end(),
                               [](const auto& s) { return s.second == "stopped"; }),
                resumed.end());
  EXPECT_EQ(resumed, steps_of(straight.out_dir + "/metrics.jsonl"));
}

TEST(HostileTrainerState, MetricsThatCannotBeWrittenAreAnError) {
  auto log_one = [] {
    Progress p("x", 10, "/proc/slimbert-no-such/metrics.jsonl");
    p.event(1, "validation", {{"loss", 1.0}});
  };
  EXPECT_ERROR_CONTAINS(log_one(), "/proc/slimbert-no-such/metrics.jsonl", "cannot append metrics");
}

}  // namespace
}  // namespace slimbert
