#include "slimbert/core/json.h"

#include <cmath>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"

namespace slimbert {

using json = nlohmann::json;

namespace {

// nlohmann's messages start with "[json.exception.parse_error.101] ": what follows is the part a
// user can act on (line, column, what was read).
std::string without_library_prefix(const std::string& what) {
  if (!what.empty() && what[0] == '[') {
    const size_t close = what.find("] ");
    if (close != std::string::npos) return what.substr(close + 2);
  }
  return what;
}

}  // namespace

std::string json_error_message(const json::exception& e) {
  return without_library_prefix(e.what());
}

json parse_json(std::string_view text, const std::string& where) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", without_library_prefix(e.what()));
  }
}

json read_json_file(const std::string& path) {
  return parse_json(read_file(path), path);
}

std::string json_text(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

std::string excerpt(const std::string& text, size_t max) {
  return text.size() > max ? text.substr(0, max - 3) + "..." : text;
}

std::string json_quoted(std::string_view s) {
  return json_text(json(std::string(s)));
}

JsonFields::JsonFields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
  if (!j_.is_object()) fail(where_, ": expected a JSON object, got ", std::string(j_.type_name()));
}

bool JsonFields::has(const char* key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

const json& JsonFields::at(const char* key) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) fail(where_, ": missing field '", key, "'");
  return *it;
}

void JsonFields::bad(const char* key, const std::string& expected) const {
  auto it = j_.find(key);
  const std::string got = it == j_.end() ? std::string("nothing") : json_text(*it);
  fail(where_, ": field '", key, "': expected ", expected, ", got ", excerpt(got));
}

int64_t JsonFields::integer(const char* key, int64_t lo, int64_t hi) const {
  const json& v = at(key);
  // Unsigned values above INT64_MAX are out of range too.
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX) ||
      v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    bad(key, cat("an integer in [", lo, ", ", hi, "]"));
  return v.get<int64_t>();
}

double JsonFields::number(const char* key) const {
  const json& v = at(key);
  if (!v.is_number() || !std::isfinite(v.get<double>())) bad(key, "a finite number");
  return v.get<double>();
}

std::string JsonFields::string(const char* key) const {
  const json& v = at(key);
  if (!v.is_string()) bad(key, "a string");
  return v.get<std::string>();
}

int64_t check_schema_version(const json& j, const std::string& where, int64_t supported) {
  if (!j.is_object()) fail(where, ": expected a JSON object, got ", excerpt(json_text(j)));
  auto it = j.find(kSchemaVersionKey);
  if (it == j.end()) return 1;
  const json& v = *it;
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    fail(where, ": field '", kSchemaVersionKey, "': expected a positive integer, got ",
         excerpt(json_text(v)));
  const int64_t version = v.get<int64_t>();
  if (version > supported)
    fail(where, ": ", kSchemaVersionKey, " ", version,
         " is newer than this slimbert reads (at most ", supported,
         "): written by a later version; upgrade slimbert to read it");
  return version;
}

}  // namespace slimbert
