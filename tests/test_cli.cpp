// The slimbert program end to end: parity through `forward`, the tokenizer through `tokenize`,
// and every bad input from the foundation issue: a clear message, a non-zero exit, no output file.
#include <ATen/ATen.h>

#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mlm_world.h"
#include "slimbert/core/fs.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/safetensors.h"
#include "slimbert/io/tensor_io.h"
#include "test_util.h"

namespace slimbert {
namespace fs = std::filesystem;
namespace {

using test::TempDir;

using Result = test::CliResult;
Result run(const std::string& args, const std::string& input = "") {
  return test::run_cli(args, input);
}

#define EXPECT_FAILS_WITH(result, ...)                                              \
  do {                                                                              \
    const Result& r_ = (result);                                                    \
    EXPECT_NE(r_.code, 0) << "stdout: " << r_.out;                                  \
    for (const std::string& part : std::initializer_list<std::string>{__VA_ARGS__}) \
      EXPECT_NE(r_.err.find(part), std::string::npos)                               \
          << "stderr: " << r_.err << "\n  lacks: " << part;                         \
  } while (0)

std::string model_dir() {
  return test::fixture("hf/model");
}
std::string vocab() {
  return test::fixture("vocab/bert-base-uncased-vocab.txt");
}

// A tiny random model with the real vocabulary and a 3-label head, made once per test binary.
const std::string& tiny_model() {
  static TempDir dir;
  static const std::string path = [&] {
    const std::string p = dir / "tiny";
    Result r = run("init " + p + " --preset tiny --labels 3 --max-positions 32 --vocab " + vocab());
    EXPECT_EQ(r.code, 0) << r.err;
    return p;
  }();
  return path;
}

// Copies the fixture model so that a test can damage it.
std::string copy_model(const TempDir& dir) {
  const std::string p = dir / "model";
  fs::copy(model_dir(), p);
  for (auto& e : fs::directory_iterator(p))
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  return p;
}

TEST(Cli, ForwardMatchesHuggingFaceGoldenOutputs) {
  TempDir dir;
  const std::string golden = model_dir() + "/outputs.safetensors";
  Result r =
      run("forward " + model_dir() + " --inputs " + golden + " --out " + (dir / "out.safetensors"));
  ASSERT_EQ(r.code, 0) << r.err;
  TensorMap got = load_safetensors(dir / "out.safetensors");
  TensorMap want = load_safetensors(golden);
  for (const char* name : {"hidden_states.0", "hidden_states.1", "hidden_states.2",
                           "last_hidden_state", "pooler_output", "mlm_logits", "cls_logits"}) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_LE((got[name] - want[name]).abs().max().item<double>(), 1e-5) << name;
  }
}

TEST(Cli, TokenizeJsonlMatchesGoldenCases) {
  TempDir dir;
  fs::copy_file(vocab(), dir / "vocab.txt");
  write_file_atomic(dir / "tokenizer_config.json",
                    std::string(R"({"do_lower_case": true, "model_max_length": 512})"));
  const std::string cases = read_file(test::fixture("hf/tokenizer_public.jsonl"));
  Result r = run("tokenize " + dir.path() + " --jsonl", cases);
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream want(cases), got(r.out);
  std::string w, g;
  int n = 0;
  while (std::getline(want, w)) {
    ASSERT_TRUE(std::getline(got, g)) << "missing output line " << n + 1;
    auto jw = nlohmann::json::parse(w), jg = nlohmann::json::parse(g);
    EXPECT_EQ(jg["input_ids"], jw["input_ids"]) << jw["id"];
    EXPECT_EQ(jg["tokens"], jw["tokens"]) << jw["id"];
    EXPECT_EQ(jg["token_type_ids"], jw["token_type_ids"]) << jw["id"];
    ++n;
  }
  EXPECT_EQ(n, 309);
}

TEST(Cli, InitInfoEmbedPredictBench) {
  const std::string m = tiny_model();
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                        "special_tokens_map.json"})
    EXPECT_TRUE(fs::exists(m + "/" + f)) << f;

  Result info = run("info " + m + " --json");
  ASSERT_EQ(info.code, 0) << info.err;
  auto ji = nlohmann::json::parse(info.out);
  int64_t sum = 0;
  for (const auto& [k, v] : load_weights(m)) sum += v.numel();
  EXPECT_EQ(ji["parameters"]["total"].get<int64_t>(), sum);
  EXPECT_GT(ji["encoder_gflops_per_sequence"].get<double>(), 0.0);

  Result embed =
      run("embed " + m, "The cat sat on the mat.\nA second, longer sentence about dogs.\n");
  ASSERT_EQ(embed.code, 0) << embed.err;
  std::istringstream lines(embed.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["cls"].size(), 128u);
    EXPECT_EQ(j["mean"].size(), 128u);
    EXPECT_EQ(j["line"], n + 1);
    ++n;
  }
  EXPECT_EQ(n, 2);

  Result pred =
      run("predict " + m + " --format jsonl", R"({"text": "good", "text_pair": "bad", "id": 7})"
                                              "\n");
  ASSERT_EQ(pred.code, 0) << pred.err;
  auto jp = nlohmann::json::parse(pred.out);
  EXPECT_EQ(jp["id"], 7);
  double total = 0;
  for (const auto& [label, p] : jp["probs"].items()) total += p.get<double>();
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_TRUE(jp["probs"].contains("LABEL_2"));

  Result bench = run("bench " + m + " --batch 2 --seq 16 --iters 5 --warmup 1 --json");
  ASSERT_EQ(bench.code, 0) << bench.err;
  auto jb = nlohmann::json::parse(bench.out);
  EXPECT_LE(jb["p50_ms"].get<double>(), jb["p90_ms"].get<double>());
  EXPECT_LE(jb["p90_ms"].get<double>(), jb["p99_ms"].get<double>());
  EXPECT_EQ(jb["batch"], 2);
  EXPECT_EQ(jb["seq"], 16);

  // The GEMM peak the benchmark sets achieved rates against: a rate per engine.
  Result peak = run("gemm-peak --size 128 --threads 1 --json");
  ASSERT_EQ(peak.code, 0) << peak.err;
  const auto jk = nlohmann::json::parse(peak.out);
  EXPECT_EQ(jk["size"], 128);
  EXPECT_GT(jk["openblas_fp32_gflop_per_s"].get<double>(), 0.0);
  if (at::hasMKLDNN()) {
    EXPECT_GT(jk["onednn_fp32_gflop_per_s"].get<double>(), 0.0);
    EXPECT_GT(jk["int8_gflop_per_s"].get<double>(), 0.0);
  }
  EXPECT_FAILS_WITH(run("gemm-peak --size 8"), "--size");
}

TEST(Cli, EmbeddingsEqualTheLibraryForward) {
  // The same text through `embed` twice, once with a different batch size: identical vectors.
  const std::string m = tiny_model();
  const std::string text = "one two three\nfour\nfive six seven eight nine\n";
  Result a = run("embed " + m + " --batch-size 1 --pooling mean", text);
  Result b = run("embed " + m + " --batch-size 3 --pooling mean", text);
  ASSERT_EQ(a.code, 0) << a.err;
  std::istringstream la(a.out), lb(b.out);
  std::string x, y;
  while (std::getline(la, x) && std::getline(lb, y)) {
    auto va = nlohmann::json::parse(x)["mean"].get<std::vector<double>>();
    auto vb = nlohmann::json::parse(y)["mean"].get<std::vector<double>>();
    ASSERT_EQ(va.size(), vb.size());
    for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], vb[i], 1e-5);
  }
}

TEST(Cli, HelpOnEveryCommand) {
  for (const char* cmd : {"", "info", "init", "tokenize", "embed", "predict", "bench", "forward"}) {
    Result r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("--"), std::string::npos) << cmd;
    if (std::string(cmd) != "") {
      EXPECT_NE(r.out.find("--threads"), std::string::npos) << cmd;
    }
  }
}

// ---- Bad input ----------------------------------------------------------------------------------

TEST(CliBadInput, MissingDirectoryAndFiles) {
  EXPECT_FAILS_WITH(run("info /nonexistent/model"), "/nonexistent/model", "not found");
  TempDir dir;
  fs::create_directories(dir / "m");
  EXPECT_FAILS_WITH(run("embed " + (dir / "m")), "config.json", "not found");
  EXPECT_FAILS_WITH(run("embed " + tiny_model() + " --input /nonexistent/in.txt"),
                    "/nonexistent/in.txt", "not found");
}

TEST(CliBadInput, DistillationOptionsNeedATeacher) {
  EXPECT_FAILS_WITH(run("finetune --model " + tiny_model() +
                        " --task tsv --data /tmp --out /tmp/x --kd-weight 0.3"),
                    "--kd-weight requires --distil-from");
}

TEST(CliBadInput, TruncatedSafetensors) {
  TempDir dir;
  const std::string m = copy_model(dir);
  const std::string data = read_file(m + "/model.safetensors");
  write_file_atomic(m + "/model.safetensors", std::string_view(data).substr(0, 5000));
  EXPECT_FAILS_WITH(run("info " + m), "model.safetensors", "out of range");
  write_file_atomic(m + "/model.safetensors", std::string_view(data).substr(0, 6));
  EXPECT_FAILS_WITH(run("info " + m), "model.safetensors", "truncated");
}

TEST(CliBadInput, CorruptHeaders) {
  TempDir dir;
  const std::string m = copy_model(dir);
  std::string data = read_file(m + "/model.safetensors");
  std::string bad = data;
  bad[8] = 'x';  // the JSON header's first byte
  write_file_atomic(m + "/model.safetensors", bad);
  EXPECT_FAILS_WITH(run("info " + m), "model.safetensors", "not valid JSON");
  bad = data;
  const size_t pos = bad.find("\"F32\"");
  bad.replace(pos, 5, "\"X32\"");
  write_file_atomic(m + "/model.safetensors", bad);
  EXPECT_FAILS_WITH(run("info " + m), "unknown dtype 'X32'");
  bad = data;
  bad[0] = static_cast<char>(0xff);  // header length beyond the file
  bad[3] = 0x7f;
  write_file_atomic(m + "/model.safetensors", bad);
  EXPECT_FAILS_WITH(run("info " + m), "header length", "past the end of the file");
}

TEST(CliBadInput, WeightsThatDoNotMatchTheConfig) {
  TempDir dir;
  const std::string m = copy_model(dir);
  auto config = nlohmann::json::parse(read_file(m + "/config.json"));
  config["intermediate_size"] = 128;
  write_file_atomic(m + "/config.json", config.dump());
  const std::string inputs = model_dir() + "/outputs.safetensors";
  EXPECT_FAILS_WITH(
      run("forward " + m + " --inputs " + inputs + " --out " + (dir / "o.safetensors")),
      "model.safetensors: bert.encoder.layer.0.intermediate.dense.weight", "expected [128, 64]",
      "file has [256, 64]");
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
}

TEST(CliBadInput, MissingAndUnexpectedTensorsAreListed) {
  TempDir dir;
  const std::string m = copy_model(dir);
  TensorMap w = load_weights(m);
  w.erase("bert.encoder.layer.1.attention.self.key.bias");
  w["bert.encoder.layer.5.output.dense.weight"] = at::zeros({2, 2});
  save_safetensors(m + "/model.safetensors", w);
  const std::string inputs = model_dir() + "/outputs.safetensors";
  Result r = run("forward " + m + " --inputs " + inputs + " --out " + (dir / "o.safetensors"));
  EXPECT_FAILS_WITH(r, "unexpected tensors", "bert.encoder.layer.5.output.dense.weight");
  w.erase("bert.encoder.layer.5.output.dense.weight");
  save_safetensors(m + "/model.safetensors", w);
  r = run("forward " + m + " --inputs " + inputs + " --out " + (dir / "o.safetensors"));
  EXPECT_FAILS_WITH(r, "missing tensors", "bert.encoder.layer.1.attention.self.key.bias");
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
}

TEST(CliBadInput, InputsLongerThanMaxPositions) {
  TempDir dir;
  std::string long_text;
  for (int i = 0; i < 60; ++i) long_text += "word ";
  // Truncated with a warning by default...
  Result r =
      run("embed " + tiny_model() + " -o " + (dir / "e.jsonl"), "short\n" + long_text + "\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("<stdin>:2: 62 tokens truncated to 32"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "e.jsonl"));
  // ...or an error with --no-truncate, and no output file.
  r = run("embed " + tiny_model() + " --no-truncate -o " + (dir / "f.jsonl"),
          "short\n" + long_text + "\n");
  EXPECT_FAILS_WITH(r, "<stdin>:2", "62 tokens", "limit of 32");
  EXPECT_FALSE(fs::exists(dir / "f.jsonl"));
  // forward checks lengths too.
  save_safetensors(dir / "long.safetensors", {{"input_ids", at::ones({1, 200}, at::kLong)}});
  EXPECT_FAILS_WITH(run("forward " + model_dir() + " --inputs " + (dir / "long.safetensors") +
                        " --out " + (dir / "o.safetensors")),
                    "sequence length 200", "max_position_embeddings 128");
}

TEST(CliBadInput, EmptyLinesAndBadJsonl) {
  TempDir dir;
  Result r = run("embed " + tiny_model() + " -o " + (dir / "e.jsonl"), "first\n\nthird\n");
  EXPECT_FAILS_WITH(r, "<stdin>:2: empty line", "--skip-empty");
  EXPECT_FALSE(fs::exists(dir / "e.jsonl"));
  r = run("embed " + tiny_model() + " --skip-empty -o " + (dir / "e.jsonl"), "first\n\nthird\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(read_file(dir / "e.jsonl").find("\"line\":3"), std::string::npos);
  EXPECT_FAILS_WITH(
      run("tokenize " + tiny_model() + " --jsonl", "{\"text\": \"a\"}\n{\"text\": oops}\n"),
      "<stdin>:2", "not valid JSON");
  EXPECT_FAILS_WITH(run("tokenize " + tiny_model() + " --jsonl", "{\"txt\": \"a\"}\n"), "<stdin>:1",
                    "\"text\"");
  EXPECT_FAILS_WITH(run("embed " + tiny_model()), "no input records");
}

TEST(CliBadInput, ForwardInputsWithoutInputIds) {
  TempDir dir;
  save_safetensors(dir / "in.safetensors", {{"attention_mask", at::ones({1, 4}, at::kLong)}});
  EXPECT_FAILS_WITH(run("forward " + model_dir() + " --inputs " + (dir / "in.safetensors") +
                        " --out " + (dir / "o.safetensors")),
                    "missing tensor 'input_ids'");
  save_safetensors(dir / "in.safetensors", {{"input_ids", at::full({1, 4}, 5000, at::kLong)}});
  EXPECT_FAILS_WITH(run("forward " + model_dir() + " --inputs " + (dir / "in.safetensors") +
                        " --out " + (dir / "o.safetensors")),
                    "input_ids out of range [0, 1000)");
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
}

TEST(CliBadInput, UnwritableOutput) {
  EXPECT_FAILS_WITH(run("embed " + tiny_model() + " -o /nonexistent/dir/e.jsonl", "hello\n"),
                    "/nonexistent/dir/e.jsonl", "cannot write");
}

TEST(CliBadInput, BadFlagValues) {
  Result r = run("init /tmp/x --preset huge");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("huge"), std::string::npos) << r.err;
  r = run("embed " + tiny_model() + " --width 1.5", "hello\n");
  EXPECT_FAILS_WITH(r, "width multiplier", "1.5");
}

// The reproducers of the defects fuzzing found, against the program itself: an exit code of 1
// and a message, never a signal, a raw library exception or minutes of allocation.
TEST(CliBadInput, HostileFilesFoundByFuzzing) {
  TempDir dir;
  // CoLA rows with one field were read past their end (SIGSEGV).
  std::string rows;
  for (int i = 0; i < 40; ++i) rows += "x\n";
  fs::create_directories(dir / "cola");
  write_file_atomic(dir / "cola/train.tsv", rows);
  write_file_atomic(dir / "cola/dev.tsv", rows);
  Result r = run("finetune --model " + tiny_model() + " --task cola --data " + (dir / "cola") +
                 " --out " + (dir / "ft") + " --epochs 1 --max-length 16");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_FAILS_WITH(r, "cola/train.tsv:1", "expected 4 columns, got 1");
  // num_labels of two billion without id2label: allocated for minutes.
  const std::string m = copy_model(dir);
  auto config = nlohmann::json::parse(read_file(m + "/config.json"));
  config.erase("id2label");
  config.erase("label2id");
  config["num_labels"] = 2000000000;
  write_file_atomic(m + "/config.json", config.dump());
  EXPECT_FAILS_WITH(run("info " + m), "config.json", "'num_labels'", "at most 65536");
  // A config that claims more than its weights hold.
  config = nlohmann::json::parse(read_file(model_dir() + "/config.json"));
  config["vocab_size"] = 4000000;
  write_file_atomic(m + "/config.json", config.dump());
  EXPECT_FAILS_WITH(run("info " + m), "model.safetensors", "config.json says vocab_size 4000000");
  // A vocab.txt longer than the model's vocabulary: ids without an embedding.
  TempDir other;
  const std::string v = copy_model(other);
  fs::copy_file(vocab(), v + "/vocab.txt", fs::copy_options::overwrite_existing);
  EXPECT_FAILS_WITH(run("embed " + v, "hello world zebra\n"),
                    "outside the model's vocabulary of 1000", "vocab.txt");
  EXPECT_FAILS_WITH(
      run("tokenize " + tiny_model() + " --jsonl", "{\"text\": \"a\", \"max_length\": 1e18}\n"),
      "<stdin>:1", "field 'max_length'");
  // A negative --max-length was "no limit".
  EXPECT_FAILS_WITH(run("tokenize " + tiny_model() + " --max-length -3", "hello\n"),
                    "--max-length");
  EXPECT_FAILS_WITH(run("finetune --model " + tiny_model() + " --task cola --data " +
                        (dir / "cola") + " --out " + (dir / "ft2") + " --max-length -3"),
                    "--max-length");
}

// A resumed run whose trainer state was corrupted or written for another run.
TEST(CliBadInput, ResumeOfACorruptedOrForeignState) {
  TempDir dir;
  const test::World& w = test::world();
  const std::string pretrain = "pretrain --init " + w.init + " --shards " + w.shards + " --out " +
                               (dir / "pt") + " --steps 6 --save-every 2";
  const std::string base = pretrain + " --batch-size 4";
  Result r = run(base + " --stop-after 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string state = dir / "pt/checkpoints/step-0000002/trainer_state/state.json";
  const char* state_name = "step-0000002/trainer_state/state.json";
  const std::string saved = read_file(state);
  EXPECT_FAILS_WITH(run(base + " --resume --seed 3"), state_name, "seed 0 -> 3");
  EXPECT_FAILS_WITH(run(pretrain + " --resume --batch-size 2"), "batch_size 4 -> 2");
  write_file_atomic(state, "{}");
  EXPECT_FAILS_WITH(run(base + " --resume"), state_name, "missing field");
  write_file_atomic(state, "{\"step\": \"2\"}");
  EXPECT_FAILS_WITH(run(base + " --resume"), state_name, "field 'step'");
  auto j = nlohmann::json::parse(saved);
  j["offset"] = -13535555;
  write_file_atomic(state, j.dump());
  r = run(base + " --resume");
  EXPECT_FAILS_WITH(r, state_name, "field 'offset'");
  EXPECT_EQ(r.err.find("_M_range_check"), std::string::npos) << r.err;
  write_file_atomic(state, saved);
  r = run(base + " --resume");
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(CliBadInput, ShardsWithoutValidationSequencesSayWhy) {
  // One document (no blank line): nothing can be held out for validation.
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "w" + std::to_string(i % 50) + (i % 10 == 9 ? " .\n" : " ");
  write_file_atomic(dir / "one-doc.txt", text);
  const test::World& w = test::world();
  const Result shards = run("data shards " + (dir / "one-doc.txt") + " --tokenizer " + w.init +
                            " --out " + (dir / "shards") + " --seq 16");
  ASSERT_EQ(shards.code, 0) << shards.err;
  EXPECT_NE(shards.err.find("warning: no validation sequences: 1 document(s)"), std::string::npos)
      << shards.err;
  const Result pretrain = run("pretrain --init " + w.init + " --shards " + (dir / "shards") +
                              " --out " + (dir / "pt") + " --steps 2 --batch-size 2");
  ASSERT_EQ(pretrain.code, 0) << pretrain.err;
  EXPECT_NE(pretrain.out.find("no validation loss (the shards hold no validation sequences)"),
            std::string::npos)
      << pretrain.out;
  // Validation turned off is not a validation loss of 0.
  const Result off = run("pretrain --init " + w.init + " --shards " + (dir / "shards") + " --out " +
                         (dir / "pt-off") + " --steps 2 --batch-size 2 --eval-every 0");
  ASSERT_EQ(off.code, 0) << off.err;
  EXPECT_NE(off.out.find("finished at step 2; no validation (--eval-every 0)"), std::string::npos)
      << off.out;
  const std::string no_validation = dir / "shards";
  EXPECT_FAILS_WITH(run("eval-mlm " + (dir / "pt/model") + " --shards " + no_validation),
                    no_validation + ": the shards hold no validation sequences");
}

// ---- WID from the command line ------------------------------------------------------------

// What a new user tripped over, each with the behaviour it now has.
TEST(NewUser, ExportOfAConfigThatDisagreesWithItsWeightsFails) {
  TempDir dir;
  // Larger than the weights: the config field is named; smaller: the tensor and both shapes.
  for (const auto& [value, says] : {std::pair{128, "config.json says hidden_size 128"},
                                    std::pair{32, "expected [1000, 32], file has [1000, 64]"}}) {
    const std::string m = copy_model(dir);
    auto config = nlohmann::json::parse(read_file(m + "/config.json"));
    config["hidden_size"] = value;
    write_file_atomic(m + "/config.json", config.dump());
    EXPECT_FAILS_WITH(run("dynabert export --model " + m + " --width 0.5 --out " + (dir / "x")),
                      "model.safetensors", says);
    EXPECT_FALSE(fs::exists(dir / "x"));
    fs::remove_all(m);
  }
}

TEST(NewUser, SlicingAModelThatWasNeverRewiredWarnsAndInfoSaysWhatWasDone) {
  const std::string m = tiny_model();
  const Result sliced = run("predict " + m + " --width 0.5", "a short text\n");
  ASSERT_EQ(sliced.code, 0) << sliced.err;
  EXPECT_NE(sliced.err.find("was never rewired"), std::string::npos) << sliced.err;
  const Result full = run("predict " + m, "a short text\n");
  EXPECT_EQ(full.err.find("was never rewired"), std::string::npos) << full.err;
  const Result info = run("info " + m);
  EXPECT_NE(info.out.find("made by slimbert: nothing recorded"), std::string::npos) << info.out;
}

TEST(NewUser, ThreadCountsOutsideTheMachineAreRejectedOrWarned) {
  const std::string m = tiny_model();
  EXPECT_FAILS_WITH(run("bench " + m + " --threads -1 --iters 2"), "--threads");
  const Result many = run("bench " + m + " --batch 1 --seq 8 --iters 2 --warmup 0 --threads 1000");
  EXPECT_EQ(many.code, 0) << many.err;
  EXPECT_NE(many.err.find("1000 threads on"), std::string::npos) << many.err;
}

TEST(NewUser, InvalidUtf8IsCountedAndReportedOnce) {
  const Result r = run("tokenize " + tiny_model(), "caf\xe9\nfine\nna\xefve\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("2 lines had invalid UTF-8"), std::string::npos) << r.err;
  size_t warnings = 0;
  for (size_t at = r.err.find("invalid UTF-8"); at != std::string::npos;
       at = r.err.find("invalid UTF-8", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u);
}

TEST(NewUser, RangesAreWrittenAsPeopleReadThem) {
  const Result r = run("bench " + tiny_model() + " --batch 0");
  EXPECT_FAILS_WITH(r, "--batch", "0 is not a count of at least 1");
  EXPECT_EQ(r.err.find("17976931348623157"), std::string::npos) << r.err;
}

TEST(NewUser, TrainingWritesItsConfigurationInsteadOfPrintingIt) {
  TempDir dir;
  const std::string data = dir / "task";
  test::write_word_count_task(data);
  const std::string args = "finetune --model " + test::world().init + " --task tsv --data " + data +
                           " --epochs 1 --batch-size 32 --max-length 16 --threads 1";
  const Result quiet = run(args + " --out " + (dir / "quiet"));
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("batch-size="), std::string::npos) << quiet.err;
  const auto config = nlohmann::json::parse(read_file(dir / "quiet/config.json"));
  EXPECT_EQ(config["subcommand"], "finetune");
  EXPECT_EQ(config["options"]["batch-size"], "32");
  EXPECT_NE(config["command"].get<std::string>().find("--max-length 16"), std::string::npos);
  const Result verbose = run(args + " --out " + (dir / "verbose") + " --verbose");
  ASSERT_EQ(verbose.code, 0) << verbose.err;
  EXPECT_NE(verbose.err.find("batch-size=32"), std::string::npos) << verbose.err;
  // --lr with a list chooses on dev and leaves the winner as OUT/best.
  const Result lrs = run(args + " --out " + (dir / "lrs") + " --lr 1e-3,3e-3");
  ASSERT_EQ(lrs.code, 0) << lrs.err;
  const auto choice = nlohmann::json::parse(read_file(dir / "lrs/lr-choice.json"));
  ASSERT_EQ(choice["tried"].size(), 2u);
  const double best =
      std::max(choice["tried"][0]["dev"].get<double>(), choice["tried"][1]["dev"].get<double>());
  EXPECT_EQ(choice["tried"][choice["tried"][0]["dev"].get<double>() == best ? 0 : 1]["lr"],
            choice["chosen"]);
  EXPECT_TRUE(fs::exists(dir / "lrs/best/model.safetensors"));
  EXPECT_NEAR(nlohmann::json::parse(read_file(dir / "lrs/eval.json"))["dev"]["main"].get<double>(),
              best, 1e-12);
}

TEST(NewUser, ErrorsNameWhatIsWrongAndLeaveNothingBehind) {
  TempDir dir;
  EXPECT_FAILS_WITH(run("finetune --model " + tiny_model() + " --task nosuchtask --data " +
                        dir.path() + " --out " + (dir / "out")),
                    "unknown task format 'nosuchtask'");
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FAILS_WITH(run("eval " + tiny_model() + " --task tsv --data /missing --splits dev"),
                    "/missing: task directory not found");
  EXPECT_FAILS_WITH(run("predict /missing", "x\n"), "/missing: checkpoint directory not found");
  // WID from a classifier: say which checkpoint it needs.
  TempDir task;
  test::write_word_count_task(task / "t");
  const Result ft =
      run("finetune --model " + test::world().init + " --task tsv --data " + (task / "t") +
          " --out " + (task / "ft") + " --epochs 1 --max-length 16 --threads 1");
  ASSERT_EQ(ft.code, 0) << ft.err;
  EXPECT_FAILS_WITH(run("wid --teacher " + (task / "ft/best") + " --corpus " +
                        test::world().shards + " --out " + (dir / "wid") + " --target-hidden 16"),
                    "WID needs the pretrained masked LM", "fine-tuned classifier");
  const Result help = run("wid truncate --help");
  EXPECT_NE(help.out.find("--target-hidden"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--teacher"), std::string::npos) << help.out;
}

TEST(NewUser, PredictAnswersEachChunkBeforeTheRestOfAPipeArrives) {
  // The first line's answer must come out while the input is still open.
  TempDir dir;
  const std::string fifo = dir / "in";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string out = dir / "out.jsonl";
  const std::string cmd = std::string(SLIMBERT_CLI) + " predict " + tiny_model() +
                          " --batch-size 1 --threads 1 -i " + fifo + " > " + out + " 2>" +
                          (dir / "err") + " &";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ofstream writer(fifo);
  writer << "first line\n" << std::flush;
  std::string got;
  for (int i = 0; i < 600 && got.find('\n') == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    got = fs::exists(out) ? read_file(out) : "";
  }
  EXPECT_NE(got.find("\"line\":1"), std::string::npos) << got << read_file(dir / "err");
  writer << "second line\n" << std::flush;
  writer.close();
  for (int i = 0; i < 600 && std::count(got.begin(), got.end(), '\n') < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    got = read_file(out);
  }
  EXPECT_NE(got.find("\"line\":2"), std::string::npos) << got;
}

TEST(CliWid, TrainMergeTruncateAndRandomBaseline) {
  const test::World& w = test::world();
  const std::string out = w.dir / "cli-wid";
  const Result train = run("wid --teacher " + w.init + " --corpus " + w.shards + " --out " + out +
                           " --target-params 15000 --strategy head --steps 20 --w-step 1"
                           " --batch-size 4 --log-every 5 --eval-every 20 --save-every 10");
  ASSERT_EQ(train.code, 0) << train.err;
  // The largest head-strategy student within 15,000 encoder parameters: hidden 16 (6,560).
  EXPECT_NE(train.out.find("hidden 16, 1 heads of 16, FFN 32, 6,560 encoder parameters"),
            std::string::npos)
      << train.out;
  // The reported validation loss is the merged student's: eval-mlm of it on the same batches.
  const size_t at = train.out.find("validation loss ");
  ASSERT_NE(at, std::string::npos) << train.out;
  const std::string reported = train.out.substr(at, train.out.find('\n', at) - at);
  const Result eval = run("eval-mlm " + out + "/student --shards " + w.shards + " --batch-size 4");
  ASSERT_EQ(eval.code, 0) << eval.err;
  EXPECT_NE(eval.out.find(reported + ", perplexity"), std::string::npos)
      << eval.out << "\n  lacks: " << reported;
  // Progress lines show the kept sizes and the parameters the merge would produce.
  EXPECT_NE(train.err.find("wid step 20/20"), std::string::npos) << train.err;
  EXPECT_NE(train.err.find("hidden 16"), std::string::npos);
  EXPECT_NE(train.err.find("params_M"), std::string::npos);

  const Result merge =
      run("wid merge --checkpoint " + out + "/checkpoints/step-0000020 --out " + out + "/merged");
  ASSERT_EQ(merge.code, 0) << merge.err;
  test::expect_same_weights(load_weights(out + "/student"), load_weights(out + "/merged"));

  const Result trunc =
      run("wid --teacher " + w.init + " --target-hidden 24 truncate --out " + out + "/trunc");
  ASSERT_EQ(trunc.code, 0) << trunc.err;
  EXPECT_EQ(load_config_dir(out + "/trunc").hidden_size, 24);
  EXPECT_EQ(load_config_dir(out + "/trunc").num_attention_heads, 2);
  write_file_atomic(out + "/vocab.txt", read_file(w.init + "/vocab.txt"));
  const Result rand =
      run("init " + out + "/rand --like " + out + "/trunc --vocab " + out + "/vocab.txt");
  ASSERT_EQ(rand.code, 0) << rand.err;
  EXPECT_EQ(load_config_dir(out + "/rand").intermediate_size, 48);
  // The predict path runs on a student.
  EXPECT_EQ(run("embed " + out + "/student", "w1 w2 w3\n").code, 0);

  EXPECT_FAILS_WITH(run("wid --teacher " + w.init + " --corpus " + w.shards + " --out " + out +
                        "/x --target-hidden 31"),
                    "--target-hidden 31 is not reachable",
                    "valid hidden sizes for the dim strategy: 30, 28, 26");
  EXPECT_FAILS_WITH(run("wid --teacher " + w.init + " --corpus " + w.shards + " --out " + out +
                        "/x --target-params 12Q"),
                    "unknown suffix 'Q'");
  EXPECT_FAILS_WITH(run("wid --teacher " + w.init + " --corpus " + w.shards + " --out " + out +
                        "/x --target-hidden 16 --mask-scores weights --residual-score all"),
                    "--residual-score chooses between compactor scores", "--mask-scores weights");
  EXPECT_FAILS_WITH(run("wid --corpus " + w.shards + " --out " + out + "/x --target-hidden 16"),
                    "--teacher is required");
  EXPECT_FAILS_WITH(run("wid merge --checkpoint " + w.init + " --out " + out + "/y"),
                    "not a training checkpoint");
}

TEST(CliDynabert, RewireStagesExportAugmentAndGrid) {
  TempDir dir;
  const std::string data = dir / "task";
  fs::create_directories(data);
  // Three classes over real words; the teacher is the random tiny model (its MLM head too).
  const std::vector<std::string> words = {"cat", "dog", "tree", "house", "river", "stone"};
  for (const auto& [split, n] : {std::pair{"train", 24}, std::pair{"dev", 9}}) {
    std::string tsv = "sentence\tlabel\n";
    for (int i = 0; i < n; ++i)
      tsv += "the " + words[i % 6] + " and a " + words[(i + 2) % 6] + " of " + words[i % 3] + "\t" +
             "LABEL_" + std::to_string(i % 3) + "\n";
    write_file_atomic(data + "/" + split + ".tsv", tsv);
  }
  const std::string t = tiny_model(), common = " --epochs 1 --batch-size 8 --max-length 16 ";
  const Result rewire = run("dynabert rewire --model " + t + " --task tsv --data " + data +
                            " --out " + dir / "rewired --examples 16");
  ASSERT_EQ(rewire.code, 0) << rewire.err;
  EXPECT_TRUE(fs::exists(dir / "rewired/importance.json"));
  const Result aug = run("dynabert augment --mlm " + t + " --task tsv --data " + data + " --out " +
                         dir / "aug --per-example 3 --max-examples 12");
  ASSERT_EQ(aug.code, 0) << aug.err;
  EXPECT_NE(aug.out.find("12 examples,"), std::string::npos) << aug.out;
  const Result width =
      run("dynabert train-width --model " + dir / "rewired --teacher " + t +
          " --task jsonl --data " + dir / "aug --out " + dir / "w --widths 1,0.5" + common);
  ASSERT_EQ(width.code, 0) << width.err;
  EXPECT_NE(width.err.find("loss_w0.5_d1"), std::string::npos) << width.err;
  const Result both = run("dynabert train --model " + dir / "w/best --teacher " +
                          dir / "w/best --task tsv --data " + data + " --out " +
                          dir / "wd --widths 1,0.5 --depths 1,0.5" + common);
  ASSERT_EQ(both.code, 0) << both.err;
  EXPECT_NE(both.err.find("loss_w0.5_d0.5"), std::string::npos) << both.err;
  const Result exp = run("dynabert export --model " +
                         dir / "wd/best --width 0.5 --depth 0.5 --out " + dir / "sep/w0.5_d0.5");
  ASSERT_EQ(exp.code, 0) << exp.err;
  EXPECT_EQ(load_config_dir(dir / "sep/w0.5_d0.5").num_hidden_layers, 1);
  // The transformers-5 form: dropped heads kept as zeros, no pruned_heads.
  const Result zeroed =
      run("dynabert export --heads zeroed --model " +
          dir / "wd/best --width 0.5 --depth 0.5 --out " + dir / "zero/w0.5_d0.5");
  ASSERT_EQ(zeroed.code, 0) << zeroed.err;
  const BertConfig zc = load_config_dir(dir / "zero/w0.5_d0.5");
  EXPECT_TRUE(zc.pruned_heads.empty());
  EXPECT_EQ(zc.num_hidden_layers, 1);
  const Result grid = run(
      "dynabert grid --model DynaBERT=" + dir / "wd/best --separate static=" +
      dir / "sep --separate zeroed=" + dir / "zero --task tsv --data " + data + " --out " +
      dir /
          "grid --widths 1,0.5 --depths 1,0.5 --max-length 16 --latency-iters 1 --latency-seq 16");
  ASSERT_EQ(grid.code, 0) << grid.err;
  const auto j = nlohmann::json::parse(read_file(dir / "grid/grid.json"));
  ASSERT_EQ(j.at("series").size(), 3u);
  EXPECT_EQ(j["series"][0]["points"].size(), 4u);
  // The exported sub-network, in both forms, scores what slicing scores.
  for (size_t s : {1u, 2u}) {
    ASSERT_EQ(j["series"][s]["points"].size(), 1u);
    EXPECT_EQ(j["series"][s]["points"][0]["scores"], j["series"][0]["points"][3]["scores"]);
  }
  EXPECT_NE(grid.out.find("report: " + dir / "grid/grid.html"), std::string::npos);

  EXPECT_FAILS_WITH(run("dynabert augment --mlm " + t + " --task tsv --data " + data + " --out " +
                        dir / "x --replace-prob 2"),
                    "--replace-prob must lie in [0, 1]");
  EXPECT_FAILS_WITH(run("dynabert grid --model " +
                        dir / "wd/best --separate s=" + dir / "nothing --task tsv --data " + data +
                        " --out " + dir / "g2 --latency-seq 16"),
                    "no separately trained model found");
}

}  // namespace
}  // namespace slimbert
