#include "slimbert/serve/request.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "slimbert/core/json.h"
#include "slimbert/text/unicode.h"

namespace slimbert::serve {

using nlohmann::json;

const char* endpoint_name(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::kPredict:
      return "predict";
    case Endpoint::kEmbed:
      return "embed";
    case Endpoint::kTokenize:
      return "tokenize";
    case Endpoint::kOpenAIEmbeddings:
      return "v1/embeddings";
  }
  return "?";
}

namespace {

[[noreturn]] void unprocessable(const std::string& field, const std::string& expected,
                                const json& got) {
  throw RequestError(
      422, cat("field '", field, "': expected ", expected, ", got ", excerpt(json_text(got))));
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

// "text" | ["text", ...] | [["a", "b"], ...] (pairs only where the endpoint takes them).
void read_inputs(Request& r, const json& j, const std::string& field, bool pairs,
                 const RequestLimits& limits) {
  if (j.is_string()) {
    r.single = true;
    r.inputs.push_back({text_of(j, field, limits), std::nullopt});
    return;
  }
  const std::string shapes =
      pairs ? "a string, a list of strings or a list of [text, text_pair] lists"
            : "a string or a list of strings";
  if (!j.is_array()) unprocessable(field, shapes, j);
  if (j.empty()) throw RequestError(422, cat("field '", field, "': the list is empty"));
  if (j.size() > limits.max_inputs)
    throw RequestError(413,
                       cat("field '", field, "': ", j.size(), " inputs, more than the limit of ",
                           limits.max_inputs, " per request (--max-client-batch-size)"));
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string item = cat(field, "[", i, "]");
    const json& e = j[i];
    if (e.is_string()) {
      r.inputs.push_back({text_of(e, item, limits), std::nullopt});
    } else if (pairs && e.is_array() && e.size() == 2) {
      r.inputs.push_back(
          {text_of(e[0], item + "[0]", limits), text_of(e[1], item + "[1]", limits)});
    } else {
      unprocessable(item, pairs ? "a string or a [text, text_pair] list" : "a string", e);
    }
  }
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
    throw RequestError(400, cat("request body is not valid JSON: ", json_error_message(e)));
  }
  if (!j.is_object()) throw RequestError(422, "request body must be a JSON object");

  const bool openai = endpoint == Endpoint::kOpenAIEmbeddings;
  std::set<std::string> allowed = {openai ? "input" : "inputs", "width", "depth",
                                   "latency_budget_ms", "truncate"};
  switch (endpoint) {
    case Endpoint::kPredict:
      allowed.insert({"raw_scores"});
      break;
    case Endpoint::kEmbed:
      allowed.insert({"normalize", "pooling"});
      break;
    case Endpoint::kTokenize:
      allowed = {"inputs", "add_special_tokens", "truncate"};
      break;
    case Endpoint::kOpenAIEmbeddings:
      allowed.insert({"model", "encoding_format", "user", "pooling"});
      break;
  }
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!allowed.count(it.key())) {
      std::string names;
      for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
      throw RequestError(
          422, cat("unknown field '", excerpt(it.key()), "' (this endpoint takes: ", names, ")"));
    }

  const std::string input_field = openai ? "input" : "inputs";
  if (!j.contains(input_field) || j[input_field].is_null())
    throw RequestError(422, cat("missing field '", input_field, "'"));
  read_inputs(r, j[input_field], input_field,
              endpoint == Endpoint::kPredict || endpoint == Endpoint::kTokenize, limits);

  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
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
  if (has("truncate")) r.truncate = boolean(j["truncate"], "truncate");
  if (has("normalize")) r.normalize = boolean(j["normalize"], "normalize");
  if (has("raw_scores")) r.raw_scores = boolean(j["raw_scores"], "raw_scores");
  if (has("add_special_tokens"))
    r.add_special_tokens = boolean(j["add_special_tokens"], "add_special_tokens");
  if (has("pooling")) {
    const json& p = j["pooling"];
    if (!p.is_string() || (p != "cls" && p != "mean"))
      unprocessable("pooling", "\"cls\" or \"mean\"", p);
    r.pooling = p.get<std::string>();
  }
  if (has("model")) {
    if (!j["model"].is_string()) unprocessable("model", "a string", j["model"]);
    r.model = excerpt(j["model"].get<std::string>(), 200);
  }
  if (has("encoding_format") && j["encoding_format"] != "float")
    unprocessable("encoding_format", "\"float\" (base64 is not supported)", j["encoding_format"]);
  if (has("user") && !j["user"].is_string()) unprocessable("user", "a string", j["user"]);
  return r;
}

}  // namespace slimbert::serve
