// Helpers shared by the tests: fixture paths, temporary directories, message assertions.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/runtime.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"

namespace slimbert::test {

inline std::string fixture(const std::string& rel) {
  return std::string(SLIMBERT_FIXTURES) + "/" + rel;
}

// The HF golden outputs of the fixture model (transformers 4.31, float32) and its inputs.
inline const TensorMap& golden() {
  static const TensorMap g = load_safetensors(fixture("hf/model/outputs.safetensors"));
  return g;
}
inline Batch golden_batch() {
  return Batch{golden().at("input_ids"), golden().at("token_type_ids"),
               golden().at("attention_mask")};
}
// Largest absolute difference of two same-shaped tensors (on any devices).
inline double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.cpu() - b.cpu()).abs().max().item<double>();
}

// A 2-layer, 32-wide BERT for fast training tests.
inline BertConfig tiny_config(int64_t vocab_size, int64_t max_positions) {
  BertConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = max_positions;
  return c;
}

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    auto base = std::filesystem::temp_directory_path() / "slimbert-test-XXXXXX";
    std::string tmpl = base.string();
    // mkdtemp returns null when TMPDIR names a missing or read-only directory: say so.
    const char* made = mkdtemp(tmpl.data());
    if (!made) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
    path_ = made;
  }
  ~TempDir() { remove_tree(path_); }
  std::string operator/(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Makes `device` the compute device for a scope (a GPU parity test), the CPU again after it.
class OnDevice {
 public:
  explicit OnDevice(c10::Device device) : saved_(compute_device()) { set_compute_device(device); }
  ~OnDevice() { set_compute_device(saved_); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

 private:
  c10::Device saved_;
};

// A copy of checkpoint `src` at `dst` with every dropout off: CPU and GPU draw different random
// masks, so runs compared across devices must not draw any.
inline std::string without_dropout(const std::string& src, const std::string& dst) {
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(src))  // checkpoints are flat
    if (e.is_regular_file())
      write_file_atomic(dst + "/" + e.path().filename().string(), read_file(e.path().string()));
  BertConfig c = BertConfig::from_json(nlohmann::json::parse(read_file(dst + "/config.json")));
  c.hidden_dropout_prob = c.attention_probs_dropout_prob = 0.0;
  c.classifier_dropout = 0.0;
  write_file_atomic(dst + "/config.json", c.to_json().dump(2) + "\n");
  return dst;
}

// Every logged loss ("loss", "loss_w0.5_d1", ...) of a run's metrics.jsonl by step; a resumed run
// that logs a step again keeps the later row.
inline std::map<int64_t, std::map<std::string, double>> logged_losses(const std::string& run_dir) {
  std::map<int64_t, std::map<std::string, double>> out;
  for (const std::string& line : split_lines(read_file(run_dir + "/metrics.jsonl"), true)) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line);
    if (!row.contains("step")) continue;
    for (auto it = row.begin(); it != row.end(); ++it)
      if (it.key().rfind("loss", 0) == 0 && it->is_number())
        out[row.at("step").get<int64_t>()][it.key()] = it->get<double>();
  }
  return out;
}

// Two runs logged the same losses at the same steps, within `rel` of each other. Training runs on
// two devices are compared so, not by their weights: Adam turns gradients that differ only by
// rounding, on parameters the loss hardly depends on, into steps of +-lr either way.
inline void expect_same_losses(const std::string& a_dir, const std::string& b_dir, double rel) {
  const auto a = logged_losses(a_dir), b = logged_losses(b_dir);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [step, losses] : a) {
    ASSERT_TRUE(b.count(step)) << "step " << step;
    for (const auto& [key, v] : losses)
      EXPECT_NEAR(b.at(step).at(key), v, rel * std::abs(v)) << key << " at step " << step;
  }
}

// Two weight sets hold the same tensor names, each bit for bit equal (resumed vs uninterrupted,
// saved vs reloaded, two paths to the same student).
inline void expect_same_weights(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  }
}

struct CliResult {
  int code = -1;
  std::string out, err;
};

// Runs `slimbert ARGS` through the shell; stdin from `input` when given.
inline CliResult run_cli(const std::string& args, const std::string& input = "") {
  static std::atomic<int> counter{0};
  const std::string base =
      (std::filesystem::temp_directory_path() /
       ("slimbert-cli-" + std::to_string(getpid()) + "-" + std::to_string(counter++)))
          .string();
  std::string cmd =
      std::string(SLIMBERT_CLI) + " " + args + " >" + base + ".out 2>" + base + ".err";
  if (!input.empty()) {
    write_file_atomic(base + ".in", input);
    cmd += " <" + base + ".in";
  } else {
    cmd += " </dev/null";
  }
  CliResult r;
  const int status = std::system(cmd.c_str());
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  for (const char* ext : {".out", ".err", ".in"}) std::filesystem::remove(base + ext);
  return r;
}

}  // namespace slimbert::test

// GPU parity tests need a CUDA build of libtorch and a GPU; elsewhere (CI) they are skipped.
#define SKIP_WITHOUT_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (CPU-only libtorch or no GPU)"

// Expects `statement` to throw slimbert::Error whose message contains every given substring.
#define EXPECT_ERROR_CONTAINS(statement, ...)                                         \
  do {                                                                                \
    try {                                                                             \
      statement;                                                                      \
      ADD_FAILURE() << "expected an error from: " #statement;                         \
    } catch (const slimbert::Error& e) {                                              \
      for (const std::string& part : std::initializer_list<std::string>{__VA_ARGS__}) \
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos)                \
            << "message: " << e.what() << "\n  lacks: " << part;                      \
    }                                                                                 \
  } while (0)
