// The server's request bodies: parsed and validated without libtorch (a fuzz target runs this).
// Shapes follow HuggingFace text-embeddings-inference ({"inputs": ...}) and OpenAI's embeddings
// API ({"input": ..., "model": ...}); slimbert adds the sub-network fields.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slimbert/core/error.h"

namespace slimbert::serve {

enum class Endpoint { kPredict, kEmbed, kTokenize, kOpenAIEmbeddings };
const char* endpoint_name(Endpoint endpoint);  // "predict", ..., "v1/embeddings"

// A request the server refuses, with its HTTP status: 400 (not JSON), 413 (too large), 422 (a
// field is missing, of the wrong type or out of range; the message names it).
class RequestError : public InputError {
 public:
  RequestError(int status, const std::string& message) : InputError(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct TextInput {
  std::string text;
  std::optional<std::string> pair;
};

struct RequestLimits {
  size_t max_inputs = 256;          // texts in one request
  size_t max_text_bytes = 1 << 20;  // one text
};

struct Request {
  Endpoint endpoint = Endpoint::kPredict;
  std::vector<TextInput> inputs;
  bool single = false;  // "inputs" was one text: the answer is one result, not a list
  // The sub-network: width/depth (each defaulting to 1), or a latency budget, never both.
  std::optional<double> width, depth, latency_budget_ms;
  std::optional<bool> truncate;        // default: the server's --no-truncate setting
  std::optional<std::string> pooling;  // embed: "cls" | "mean"; default: the server's --pooling
  bool normalize = true;               // embed: unit-length vectors
  bool raw_scores = false;             // predict: logits instead of probabilities
  bool add_special_tokens = true;      // tokenize
  std::string model;                   // OpenAI: echoed back
  size_t replaced_utf8 = 0;            // invalid UTF-8 sequences replaced by U+FFFD
};

// Parses a request body. Invalid UTF-8 is replaced (counted in replaced_utf8), unknown fields are
// errors (a misspelt "widht" must not silently run the full model).
Request parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits = {});

}  // namespace slimbert::serve
