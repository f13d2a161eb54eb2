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

// The state files slimbert writes and reads back (trainer state, compress.json, profile.json,
// grid.json, shards.json) carry "schema_version". A reader checks it before any other field: a
// file from a newer slimbert may give its fields other meanings. A file without the field was
// written before versions were stamped, and reads as version 1.
constexpr const char* kSchemaVersionKey = "schema_version";
// The version each file is written with and the newest each reader accepts: a change of a
// file's fields that an older reader would misread raises its number.
constexpr int64_t kTrainerStateVersion = 1;  // checkpoint-*/trainer_state/state.json
constexpr int64_t kLedgerVersion = 1;        // compress.json
constexpr int64_t kProfileVersion = 1;       // profile.json, profile-int8.json
constexpr int64_t kGridVersion = 1;          // grid.json
constexpr int64_t kShardsVersion = 1;        // shards.json
// Fails with "<where>: schema_version N is newer than this slimbert reads (at most M)..." unless
// `j`'s version is an integer in [1, supported]; returns it.
int64_t check_schema_version(const nlohmann::json& j, const std::string& where, int64_t supported);

}  // namespace slimbert
