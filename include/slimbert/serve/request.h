// The server's request bodies: parsed and validated without libtorch (a fuzz target runs this).
// The fields are HuggingFace text-embeddings-inference's (TEI 1.9, every route) and OpenAI's
// embeddings API's; slimbert adds optional fields that choose the sub-network.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slimbert/core/error.h"

namespace slimbert::serve {

enum class Endpoint {
  kEmbed,
  kEmbedAll,
  kEmbedSparse,
  kPredict,
  kRerank,
  kSimilarity,
  kTokenize,
  kDecode,
  kOpenAIEmbeddings
};
const char* endpoint_name(Endpoint endpoint);  // "embed", ..., "v1/embeddings"
std::vector<Endpoint> all_endpoints();

// TEI's error types, which its error bodies name.
enum class ErrorType { kEmpty, kValidation, kTokenizer, kBackend, kOverloaded, kUnhealthy };
const char* error_type_name(ErrorType type);  // "Empty", "Validation", ...

// A request the server refuses, with its HTTP status and TEI's error type: 400 Empty (no inputs),
// 413 Validation (too many inputs, a text or body too large, a text over the model's limit
// without truncation), 422 Validation (a field missing, of the wrong type or out of range; the
// message names it), 422 Tokenizer, 424 Backend, 429 Overloaded, 503 Unhealthy.
class RequestError : public InputError {
 public:
  RequestError(int status, const std::string& message);
  RequestError(int status, ErrorType type, const std::string& message)
      : InputError(message), status_(status), type_(type) {}
  int status() const { return status_; }
  ErrorType type() const { return type_; }

 private:
  int status_;
  ErrorType type_;
};

// One input: a text, a text pair, or token ids given instead of text.
struct TextInput {
  std::string text;
  std::optional<std::string> pair;
  std::optional<std::vector<int64_t>> ids;
};

struct RequestLimits {
  size_t max_inputs = 256;          // inputs in one request
  size_t max_text_bytes = 1 << 20;  // one text
};

struct Request {
  Endpoint endpoint = Endpoint::kEmbed;
  // Embed routes, predict, tokenize: the inputs. Rerank: (query, text) pairs. Similarity: the
  // source sentence, then the sentences.
  std::vector<TextInput> inputs;
  // predict: one text or one pair, answered with one list of predictions (not a list of lists).
  bool single = false;
  // The sub-network: width/depth (each defaulting to 1), or a latency budget, never both.
  std::optional<double> width, depth, latency_budget_ms;
  std::optional<bool> truncate;        // default: the server's --no-truncate setting
  bool truncate_left = false;          // truncation_direction "Left"
  std::optional<std::string> pooling;  // embed: cls | mean | max | lasttoken; default: the server's
  bool normalize = true;               // embed: unit-length vectors
  std::optional<int64_t> dimensions;   // embed, v1/embeddings: keep the first N, then normalise
  std::optional<std::string> prompt_name;
  bool raw_scores = false;                // predict, rerank: logits instead of probabilities
  bool return_text = false;               // rerank
  bool add_special_tokens = true;         // tokenize
  bool skip_special_tokens = true;        // decode
  std::vector<std::vector<int64_t>> ids;  // decode
  bool base64 = false;                    // v1/embeddings: encoding_format "base64"
  std::string model;                      // v1/embeddings: echoed back, or a sub-network's name
  std::vector<std::string>
      ignored;               // fields this route does not know (TEI ignores them): 8 at most
  size_t replaced_utf8 = 0;  // invalid UTF-8 sequences replaced by U+FFFD
};

// Parses a request body. Invalid UTF-8 is replaced (counted in replaced_utf8); unknown fields are
// ignored, as TEI does, and listed in `ignored` (the server names them in a response header).
Request parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits = {});

}  // namespace slimbert::serve
