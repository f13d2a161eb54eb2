// Helpers shared by the tests: fixture paths, temporary directories, message assertions.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "slimbert/core/error.h"
#include "slimbert/model/config.h"

namespace slimbert::test {

inline std::string fixture(const std::string& rel) {
  return std::string(SLIMBERT_FIXTURES) + "/" + rel;
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
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace slimbert::test

// Expects `statement` to throw slimbert::Error whose message contains every given substring.
#define EXPECT_ERROR_CONTAINS(statement, ...)                          \
  do {                                                                 \
    try {                                                              \
      statement;                                                       \
      ADD_FAILURE() << "expected an error from: " #statement;          \
    } catch (const slimbert::Error& e) {                               \
      for (const std::string& part : {__VA_ARGS__})                    \
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) \
            << "message: " << e.what() << "\n  lacks: " << part;       \
    }                                                                  \
  } while (0)
