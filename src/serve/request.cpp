#include "slimbert/serve/request.h"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "slimbert/core/json.h"
#include "slimbert/text/unicode.h"

namespace slimbert::serve {

using nlohmann::json;

const char* endpoint_name(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::kEmbed:
      return "embed";
    case Endpoint::kEmbedAll:
      return "embed_all";
    case Endpoint::kEmbedSparse:
      return "embed_sparse";
    case Endpoint::kPredict:
      return "predict";
    case Endpoint::kRerank:
      return "rerank";
    case Endpoint::kSimilarity:
      return "similarity";
    case Endpoint::kTokenize:
      return "tokenize";
    case Endpoint::kDecode:
      return "decode";
    case Endpoint::kOpenAIEmbeddings:
      return "v1/embeddings";
  }
  return "?";
}

std::vector<Endpoint> all_endpoints() {
  return {Endpoint::kEmbed,    Endpoint::kEmbedAll, Endpoint::kEmbedSparse,
          Endpoint::kPredict,  Endpoint::kRerank,   Endpoint::kSimilarity,
          Endpoint::kTokenize, Endpoint::kDecode,   Endpoint::kOpenAIEmbeddings};
}

const char* error_type_name(ErrorType type) {
  switch (type) {
    case ErrorType::kEmpty:
      return "Empty";
    case ErrorType::kValidation:
      return "Validation";
    case ErrorType::kTokenizer:
      return "Tokenizer";
    case ErrorType::kBackend:
      return "Backend";
    case ErrorType::kOverloaded:
      return "Overloaded";
    case ErrorType::kUnhealthy:
      return "Unhealthy";
  }
  return "Backend";
}

namespace {

ErrorType type_of(int status) {
  switch (status) {
    case 400:
      return ErrorType::kEmpty;
    case 413:
    case 422:
      return ErrorType::kValidation;
    case 429:
      return ErrorType::kOverloaded;
    case 503:
      return ErrorType::kUnhealthy;
    default:
      return ErrorType::kBackend;
  }
}

}  // namespace

RequestError::RequestError(int status, const std::string& message)
    : RequestError(status, type_of(status), message) {}

namespace {

[[noreturn]] void unprocessable(const std::string& field, const std::string& expected,
                                const json& got) {
  throw RequestError(
      422, cat("field '", field, "': expected ", expected, ", got ", excerpt(json_text(got))));
}

[[noreturn]] void empty(const std::string& field) {
  throw RequestError(400, cat("field '", field, "': the batch is empty"));
}

// Replaces each invalid UTF-8 sequence by U+FFFD, as HF tokenizers do with lossy decoding.
std::string valid_utf8(std::string_view body, size_t* replaced) {
  if (unicode::is_valid_utf8(body)) return std::string(body);
  const std::u32string cps = unicode::decode_utf8(body);
  for (char32_t c : cps) *replaced += c == 0xFFFD;
  // U+FFFD already in the body is counted too: close enough for a warning count.
  return unicode::encode_utf8(cps);
}

std::string text_of(const json& j, const std::string& field, const RequestLimits& limits) {
  if (!j.is_string()) unprocessable(field, "a string", j);
  std::string s = j.get<std::string>();
  if (s.size() > limits.max_text_bytes)
    throw RequestError(413, cat("field '", field, "': text of ", s.size(),
                                " bytes, more than the limit of ", limits.max_text_bytes));
  return s;
}

bool is_id(const json& j) {
  return j.is_number_integer() && j.get<int64_t>() >= 0 && j.get<int64_t>() <= INT32_MAX;
}

bool all_ids(const json& j) {
  if (!j.is_array() || j.empty()) return false;
  for (const json& e : j)
    if (!e.is_number()) return false;
  return true;
}

std::vector<int64_t> ids_of(const json& j, const std::string& field) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!is_id(j[i])) unprocessable(cat(field, "[", i, "]"), "a token id (an integer >= 0)", j[i]);
    ids.push_back(j[i].get<int64_t>());
  }
  return ids;
}

void check_count(size_t n, const std::string& field, const RequestLimits& limits) {
  if (n == 0) empty(field);
  if (n > limits.max_inputs)
    throw RequestError(413, cat("field '", field, "': ", n, " inputs, more than the limit of ",
                                limits.max_inputs, " per request (--max-client-batch-size)"));
}

// TEI's Input: "text" | [token ids] | a list of texts and token-id lists.
void read_inputs(Request& r, const json& j, const std::string& field, const RequestLimits& limits) {
  if (j.is_string()) {
    r.inputs.push_back({text_of(j, field, limits), std::nullopt, std::nullopt});
    return;
  }
  const std::string shapes = "a string, a list of token ids, or a list of those";
  if (!j.is_array()) unprocessable(field, shapes, j);
  if (all_ids(j)) {
    r.inputs.push_back({"", std::nullopt, ids_of(j, field)});
    return;
  }
  check_count(j.size(), field, limits);
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string item = cat(field, "[", i, "]");
    const json& e = j[i];
    if (e.is_string())
      r.inputs.push_back({text_of(e, item, limits), std::nullopt, std::nullopt});
    else if (all_ids(e))
      r.inputs.push_back({"", std::nullopt, ids_of(e, item)});
    else
      unprocessable(item, "a string or a non-empty list of token ids", e);
  }
}

// TEI's PredictInput: "text" | ["text", "pair"] | a batch of texts, [text] and [text, pair] lists.
// A list of strings other than two is a batch of texts, as TEI reads it.
void read_predict_inputs(Request& r, const json& j, const RequestLimits& limits) {
  if (j.is_string()) {
    r.single = true;
    r.inputs.push_back({text_of(j, "inputs", limits), std::nullopt, std::nullopt});
    return;
  }
  if (!j.is_array())
    unprocessable("inputs", "a string, a [text, pair] list, or a list of those", j);
  if (j.size() == 2 && j[0].is_string() && j[1].is_string()) {
    r.single = true;
    r.inputs.push_back(
        {text_of(j[0], "inputs[0]", limits), text_of(j[1], "inputs[1]", limits), std::nullopt});
    return;
  }
  check_count(j.size(), "inputs", limits);
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string item = cat("inputs[", i, "]");
    const json& e = j[i];
    if (e.is_string()) {
      r.inputs.push_back({text_of(e, item, limits), std::nullopt, std::nullopt});
    } else if (e.is_array() && (e.size() == 1 || e.size() == 2)) {
      TextInput in{text_of(e[0], item + "[0]", limits), std::nullopt, std::nullopt};
      if (e.size() == 2) in.pair = text_of(e[1], item + "[1]", limits);
      r.inputs.push_back(std::move(in));
    } else {
      unprocessable(item, "a string, a [text] or a [text, pair] list", e);
    }
  }
}

// ["text", ...] of at most max_inputs strings; empty is 400 Empty.
std::vector<std::string> texts_of(const json& j, const std::string& field,
                                  const RequestLimits& limits) {
  if (!j.is_array()) unprocessable(field, "a list of strings", j);
  check_count(j.size(), field, limits);
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i)
    out.push_back(text_of(j[i], cat(field, "[", i, "]"), limits));
  return out;
}

double multiplier(const json& j, const std::string& field) {
  if (!j.is_number() || !(j.get<double>() > 0.0 && j.get<double>() <= 1.0))
    unprocessable(field, "a number in (0, 1]", j);
  return j.get<double>();
}

bool boolean(const json& j, const std::string& field) {
  if (!j.is_boolean()) unprocessable(field, "true or false", j);
  return j.get<bool>();
}

std::string string_of(const json& j, const std::string& field) {
  if (!j.is_string()) unprocessable(field, "a string", j);
  return excerpt(j.get<std::string>(), 200);
}

// The fields each route reads; anything else is ignored (and reported).
const std::set<std::string>& fields_of(Endpoint endpoint) {
  static const std::map<Endpoint, std::set<std::string>> fields = [] {
    const std::set<std::string> choose = {"width", "depth", "latency_budget_ms"};
    const std::set<std::string> encode = {"truncate", "truncation_direction", "prompt_name"};
    auto with = [](std::set<std::string> a, const std::set<std::string>& b,
                   std::initializer_list<std::string> more) {
      a.insert(b.begin(), b.end());
      a.insert(more.begin(), more.end());
      return a;
    };
    std::map<Endpoint, std::set<std::string>> m;
    m[Endpoint::kEmbed] = with(choose, encode, {"inputs", "normalize", "dimensions", "pooling"});
    m[Endpoint::kEmbedAll] = with(choose, encode, {"inputs"});
    m[Endpoint::kEmbedSparse] = with(choose, encode, {"inputs"});
    m[Endpoint::kPredict] =
        with(choose, {"truncate", "truncation_direction"}, {"inputs", "raw_scores"});
    m[Endpoint::kRerank] = with(choose, {"truncate", "truncation_direction"},
                                {"query", "texts", "raw_scores", "return_text"});
    m[Endpoint::kSimilarity] = with(choose, {}, {"inputs", "parameters", "pooling"});
    m[Endpoint::kTokenize] = {"inputs", "add_special_tokens", "prompt_name"};
    m[Endpoint::kDecode] = {"ids", "skip_special_tokens"};
    m[Endpoint::kOpenAIEmbeddings] =
        with(choose, {}, {"input", "model", "user", "encoding_format", "dimensions", "pooling"});
    return m;
  }();
  return fields.at(endpoint);
}

// truncate, truncation_direction and prompt_name, from the body or similarity's parameters.
void read_encoding_fields(Request& r, const json& j, const std::string& prefix) {
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  if (has("truncate")) r.truncate = boolean(j["truncate"], prefix + "truncate");
  if (has("truncation_direction")) {
    const json& d = j["truncation_direction"];
    if (d != "Left" && d != "Right" && d != "left" && d != "right")
      unprocessable(prefix + "truncation_direction", "\"Left\" or \"Right\"", d);
    r.truncate_left = d == "Left" || d == "left";
  }
  if (has("prompt_name")) r.prompt_name = string_of(j["prompt_name"], prefix + "prompt_name");
}

}  // namespace

Request parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits) {
  Request r;
  r.endpoint = endpoint;
  const std::string text = valid_utf8(body, &r.replaced_utf8);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number past double's range ("1e999999").
    throw RequestError(422, cat("request body is not valid JSON: ", json_error_message(e)));
  }
  if (!j.is_object()) throw RequestError(422, "request body must be a JSON object");
  const std::set<std::string>& known = fields_of(endpoint);
  // The first few names are enough for a header that says what was ignored.
  for (auto it = j.begin(); it != j.end() && r.ignored.size() < 8; ++it)
    if (!known.count(it.key())) {
      // The name goes into a response header: printable ASCII only.
      std::string name = excerpt(it.key(), 40);
      for (char& c : name)
        if (c < 0x20 || c > 0x7e || c == ',') c = '?';
      r.ignored.push_back(std::move(name));
    }

  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto require = [&](const char* key) -> const json& {
    if (!has(key)) throw RequestError(422, cat("missing field '", key, "'"));
    return j[key];
  };
  switch (endpoint) {
    case Endpoint::kEmbed:
    case Endpoint::kEmbedAll:
    case Endpoint::kEmbedSparse:
      read_inputs(r, require("inputs"), "inputs", limits);
      break;
    case Endpoint::kOpenAIEmbeddings:
      read_inputs(r, require("input"), "input", limits);
      break;
    case Endpoint::kPredict:
      read_predict_inputs(r, require("inputs"), limits);
      break;
    case Endpoint::kRerank: {
      const std::string query = text_of(require("query"), "query", limits);
      for (std::string& t : texts_of(require("texts"), "texts", limits))
        r.inputs.push_back({query, std::move(t), std::nullopt});
      break;
    }
    case Endpoint::kSimilarity: {
      const json& in = require("inputs");
      if (!in.is_object()) unprocessable("inputs", "an object {source_sentence, sentences}", in);
      if (!in.contains("source_sentence"))
        throw RequestError(422, "missing field 'inputs.source_sentence'");
      if (!in.contains("sentences")) throw RequestError(422, "missing field 'inputs.sentences'");
      const std::vector<std::string> sentences =
          texts_of(in["sentences"], "inputs.sentences", limits);
      if (sentences.size() + 1 > limits.max_inputs)
        check_count(sentences.size() + 1, "inputs.sentences", limits);
      r.inputs.push_back({text_of(in["source_sentence"], "inputs.source_sentence", limits),
                          std::nullopt, std::nullopt});
      for (const std::string& s : sentences) r.inputs.push_back({s, std::nullopt, std::nullopt});
      if (has("parameters")) {
        const json& p = j["parameters"];
        if (!p.is_object()) unprocessable("parameters", "an object", p);
        read_encoding_fields(r, p, "parameters.");
      }
      break;
    }
    case Endpoint::kTokenize: {
      const json& in = require("inputs");
      if (in.is_string()) {
        r.inputs.push_back({text_of(in, "inputs", limits), std::nullopt, std::nullopt});
      } else {
        for (std::string& t : texts_of(in, "inputs", limits))
          r.inputs.push_back({std::move(t), std::nullopt, std::nullopt});
      }
      break;
    }
    case Endpoint::kDecode: {
      const json& ids = require("ids");
      const std::string shapes = "a list of token ids or a list of those";
      if (!ids.is_array()) unprocessable("ids", shapes, ids);
      if (all_ids(ids)) {
        r.ids.push_back(ids_of(ids, "ids"));
      } else {
        check_count(ids.size(), "ids", limits);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (!ids[i].is_array()) unprocessable(cat("ids[", i, "]"), "a list of token ids", ids[i]);
          r.ids.push_back(ids_of(ids[i], cat("ids[", i, "]")));
        }
      }
      if (has("skip_special_tokens"))
        r.skip_special_tokens = boolean(j["skip_special_tokens"], "skip_special_tokens");
      return r;
    }
  }
  if (endpoint != Endpoint::kSimilarity) read_encoding_fields(r, j, "");

  if (known.count("width")) {
    if (has("width")) r.width = multiplier(j["width"], "width");
    if (has("depth")) r.depth = multiplier(j["depth"], "depth");
    if (has("latency_budget_ms")) {
      const json& b = j["latency_budget_ms"];
      if (!b.is_number() || !(b.get<double>() > 0.0 && b.get<double>() <= 3.6e6))
        unprocessable("latency_budget_ms", "a number of milliseconds in (0, 3600000]", b);
      if (r.width || r.depth)
        throw RequestError(422,
                           "give either width/depth or latency_budget_ms, not both: the budget "
                           "chooses the sub-network");
      r.latency_budget_ms = b.get<double>();
    }
  }
  if (known.count("normalize") && has("normalize"))
    r.normalize = boolean(j["normalize"], "normalize");
  if (known.count("raw_scores") && has("raw_scores"))
    r.raw_scores = boolean(j["raw_scores"], "raw_scores");
  if (known.count("return_text") && has("return_text"))
    r.return_text = boolean(j["return_text"], "return_text");
  if (known.count("add_special_tokens") && has("add_special_tokens"))
    r.add_special_tokens = boolean(j["add_special_tokens"], "add_special_tokens");
  if (known.count("dimensions") && has("dimensions")) {
    const json& d = j["dimensions"];
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > (1 << 20))
      unprocessable("dimensions", "an integer >= 1", d);
    r.dimensions = d.get<int64_t>();
  }
  if (known.count("pooling") && has("pooling")) {
    const json& p = j["pooling"];
    if (!p.is_string() || (p != "cls" && p != "mean" && p != "max" && p != "lasttoken"))
      unprocessable("pooling", "\"cls\", \"mean\", \"max\" or \"lasttoken\"", p);
    r.pooling = p.get<std::string>();
  }
  if (endpoint == Endpoint::kOpenAIEmbeddings) {
    if (has("model")) r.model = string_of(j["model"], "model");
    if (has("user")) string_of(j["user"], "user");
    if (has("encoding_format")) {
      const json& f = j["encoding_format"];
      if (f != "float" && f != "base64")
        unprocessable("encoding_format", "\"float\" or \"base64\"", f);
      r.base64 = f == "base64";
    }
  }
  return r;
}

}  // namespace slimbert::serve
