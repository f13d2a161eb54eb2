// JSON read from files written by others: every parse or type problem becomes a message that
// names the file and the field, never the JSON library's own exception text.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace slimbert {

// Parses `text`; fails with "<where>: not valid JSON: <what and where in the text>".
nlohmann::json parse_json(std::string_view text, const std::string& where);
// The part of a JSON library error a user can act on (without "[json.exception...] ").
std::string json_error_message(const nlohmann::json::exception& e);
// read_file + parse_json.
nlohmann::json read_json_file(const std::string& path);

// JSON text of `j` that never throws: strings holding invalid UTF-8 (a header read from a file,
// a label) have those bytes replaced by U+FFFD.
std::string json_text(const nlohmann::json& j, int indent = -1);
// `text` for a message: cut to at most `max` characters, "..." marking the cut.
std::string excerpt(const std::string& text, size_t max = 80);
// A string quoted as JSON for messages ("a\tb"), invalid UTF-8 replaced.
std::string json_quoted(std::string_view s);

// Typed, bounded fields of one JSON object; errors name `where` and the field.
class JsonFields {
 public:
  // Fails unless `j` is an object.
  JsonFields(const nlohmann::json& j, std::string where);

  bool has(const char* key) const;                                 // present and not null
  const nlohmann::json& at(const char* key) const;                 // required (any type)
  int64_t integer(const char* key, int64_t lo, int64_t hi) const;  // required, within [lo, hi]
  double number(const char* key) const;                            // required, finite
  std::string string(const char* key) const;                       // required
  [[noreturn]] void bad(const char* key, const std::string& expected) const;
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace slimbert
