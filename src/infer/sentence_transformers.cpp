#include "slimbert/infer/sentence_transformers.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "slimbert/core/error.h"
#include "slimbert/core/json.h"

namespace slimbert::infer {

using nlohmann::json;

namespace {

namespace fs = std::filesystem;

// A sentence-transformers configuration file is small; a larger one is not one.
constexpr uintmax_t kMaxConfigBytes = 1 << 20;

std::optional<json> read_if_present(const fs::path& path) {
  if (!fs::exists(path)) return std::nullopt;
  if (fs::file_size(path) > kMaxConfigBytes)
    fail(path.string(), ": ", fs::file_size(path), " bytes, more than a configuration file holds");
  return read_json_file(path.string());
}

bool flag(const JsonFields& f, const char* key) {
  if (!f.has(key)) return false;
  if (!f.at(key).is_boolean()) f.bad(key, "true or false");
  return f.at(key).get<bool>();
}

// 1_Pooling/config.json: exactly one of the modes slimbert pools by.
void read_pooling(const fs::path& path, SentenceTransformer& st) {
  const std::optional<json> j = read_if_present(path);
  if (!j) fail(path.string(), ": missing (modules.json names a Pooling module here)");
  const JsonFields f(*j, path.string());
  const std::pair<const char*, Pooling> modes[] = {{"pooling_mode_cls_token", Pooling::kCls},
                                                   {"pooling_mode_mean_tokens", Pooling::kMean},
                                                   {"pooling_mode_max_tokens", Pooling::kMax},
                                                   {"pooling_mode_lasttoken", Pooling::kLastToken}};
  std::vector<std::string> on;
  for (const auto& [key, mode] : modes)
    if (flag(f, key)) {
      on.push_back(key);
      st.pooling = mode;
    }
  for (const char* key : {"pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"})
    if (flag(f, key))
      fail(path.string(), ": ", key, " is not supported (cls, mean, max, lasttoken)");
  if (on.size() != 1)
    fail(path.string(), ": expected exactly one pooling mode set, got ",
         on.empty() ? std::string("none")
                    : cat(on.size(), " (their concatenation is not supported)"));
  if (f.has("include_prompt")) st.include_prompt = flag(f, "include_prompt");
}

}  // namespace

SentenceTransformer read_sentence_transformer(const std::string& dir) {
  SentenceTransformer st;
  if (dir.empty()) return st;
  const fs::path root(dir);
  if (const auto modules = read_if_present(root / "modules.json")) {
    st.present = true;
    const std::string where = (root / "modules.json").string();
    if (!modules->is_array()) fail(where, ": expected a list of modules");
    size_t i = 0;
    for (const json& m : *modules) {
      const JsonFields f(m, cat(where, ": module ", i++));
      const std::string type = f.string("type");
      const std::string path = f.has("path") ? f.string("path") : "";
      if (type.find("Transformer") != std::string::npos) continue;
      if (type.find("Pooling") != std::string::npos) {
        read_pooling(root / path / "config.json", st);
      } else if (type.find("Normalize") != std::string::npos) {
        st.normalize = true;
      } else {
        fail(f.where(), ": module type '", excerpt(type),
             "' is not supported (Transformer, "
             "Pooling and Normalize are)");
      }
    }
  }
  if (const auto bert = read_if_present(root / "sentence_bert_config.json")) {
    const JsonFields f(*bert, (root / "sentence_bert_config.json").string());
    if (f.has("max_seq_length")) st.max_seq_length = f.integer("max_seq_length", 1, 1 << 20);
  }
  if (const auto config = read_if_present(root / "config_sentence_transformers.json")) {
    const JsonFields f(*config, (root / "config_sentence_transformers.json").string());
    if (f.has("prompts")) {
      const json& p = f.at("prompts");
      if (!p.is_object()) f.bad("prompts", "an object of prompt names and texts");
      for (auto it = p.begin(); it != p.end(); ++it) {
        if (!it->is_string()) f.bad("prompts", "prompt texts as strings");
        st.prompts[it.key()] = it->get<std::string>();
      }
    }
    if (f.has("default_prompt_name")) {
      st.default_prompt_name = f.string("default_prompt_name");
      if (!st.prompts.count(*st.default_prompt_name))
        fail(f.where(), ": default_prompt_name '", excerpt(*st.default_prompt_name),
             "' is not one of its prompts");
    }
  }
  return st;
}

void copy_sentence_transformer_files(const std::string& dir, const std::string& to) {
  const fs::path from(dir), into(to);
  const auto options = fs::copy_options::recursive | fs::copy_options::overwrite_existing;
  for (const char* file :
       {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"})
    if (fs::exists(from / file)) fs::copy(from / file, into / file, options);
  const std::optional<json> modules = read_if_present(from / "modules.json");
  if (!modules) return;
  const std::string where = (from / "modules.json").string();
  if (!modules->is_array()) fail(where, ": expected a list of modules");
  size_t i = 0;
  for (const json& m : *modules) {
    const JsonFields f(m, cat(where, ": module ", i++));
    const std::string path = f.has("path") ? f.string("path") : "";
    if (path.empty()) continue;  // the Transformer module: the checkpoint itself
    const fs::path rel(path);
    for (const auto& part : rel)
      if (rel.is_absolute() || part == "..")
        fail(f.where(), ": path '", excerpt(path), "' leaves the model directory");
    if (fs::is_directory(from / rel)) {
      fs::create_directories(into / rel);
      fs::copy(from / rel, into / rel, options);
    }
  }
}

int64_t prompt_pool_from(const Tokenizer& tokenizer, const std::string& prompt,
                         bool include_prompt) {
  if (include_prompt || prompt.empty()) return 0;
  return static_cast<int64_t>(tokenizer.encode(prompt).input_ids.size()) - 1;
}

}  // namespace slimbert::infer
