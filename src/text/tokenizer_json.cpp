#include "slimbert/text/tokenizer_json.h"

#include <oniguruma.h>
#include <utf8proc.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <tuple>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/text/unicode.h"

namespace slimbert {

namespace uc = unicode;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------
// Normalized text: each character carries the byte range of the source text it came from, so
// every token can point back at the bytes it was made of, whatever normalization did.

struct NChar {
  char32_t c;
  uint32_t begin, end;
};
using NStr = std::vector<NChar>;

NStr from_text(std::string_view text, size_t base) {
  NStr out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n =
        utf8proc_iterate(p + pos, static_cast<utf8proc_ssize_t>(text.size() - pos), &cp);
    if (n <= 0 || cp < 0) {  // an invalid byte is one U+FFFD, as everywhere in slimbert
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back({static_cast<char32_t>(cp), static_cast<uint32_t>(base + pos),
                   static_cast<uint32_t>(base + pos + static_cast<size_t>(n))});
    pos += static_cast<size_t>(n);
  }
  return out;
}

std::string to_utf8(const NStr& s, size_t begin = 0, size_t end = std::string::npos) {
  std::string out;
  end = std::min(end, s.size());
  for (size_t i = begin; i < end; ++i) uc::append_utf8(out, s[i].c);
  return out;
}

// Byte offset in to_utf8(s) of each character, and the total length last.
std::vector<size_t> byte_starts(const NStr& s) {
  std::vector<size_t> out;
  out.reserve(s.size() + 1);
  size_t pos = 0;
  for (const auto& ch : s) {
    out.push_back(pos);
    pos += ch.c < 0x80 ? 1 : ch.c < 0x800 ? 2 : ch.c < 0x10000 ? 3 : 4;
  }
  out.push_back(pos);
  return out;
}

size_t char_at_byte(const std::vector<size_t>& starts, size_t byte) {
  return static_cast<size_t>(std::lower_bound(starts.begin(), starts.end(), byte) - starts.begin());
}

// Replaces s[begin, end) by `with`, every new character aligned to the replaced ones' bytes (or,
// for an insertion, to the character it is inserted before).
void replace_range(NStr& s, size_t begin, size_t end, std::u32string_view with) {
  uint32_t from = 0, to = 0;
  if (begin < end) {
    from = s[begin].begin;
    to = s[end - 1].end;
  } else if (begin < s.size()) {
    from = s[begin].begin;
    to = s[begin].end;
  } else if (!s.empty()) {
    from = s.back().begin;
    to = s.back().end;
  }
  NStr repl;
  for (char32_t c : with) repl.push_back({c, from, to});
  s.erase(s.begin() + static_cast<std::ptrdiff_t>(begin),
          s.begin() + static_cast<std::ptrdiff_t>(end));
  s.insert(s.begin() + static_cast<std::ptrdiff_t>(begin), repl.begin(), repl.end());
}

// ---------------------------------------------------------------------------------------------
// Oniguruma, the regex engine HF's tokenizers library itself uses.

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    static std::once_flag once;
    std::call_once(once, [] {
      OnigEncoding enc = ONIG_ENCODING_UTF8;
      onig_initialize(&enc, 1);
    });
    OnigErrorInfo info;
    regex_t* re = nullptr;
    const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
    const int r = onig_new(&re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                           ONIG_SYNTAX_DEFAULT, &info);
    if (r != ONIG_NORMAL) {
      OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(msg, r, &info);
      fail(where, ": regular expression '", pattern,
           "' does not compile: ", reinterpret_cast<char*>(msg));
    }
    re_.reset(re, onig_free);
  }

  // Non-empty, non-overlapping matches, left to right, as byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const {
    std::vector<std::pair<size_t, size_t>> out;
    std::unique_ptr<OnigRegion, void (*)(OnigRegion*)> region(
        onig_region_new(), [](OnigRegion* r) { onig_region_free(r, 1); });
    const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
    const auto* end = str + text.size();
    size_t start = 0;
    while (start <= text.size()) {
      const int r =
          onig_search(re_.get(), str, end, str + start, end, region.get(), ONIG_OPTION_NONE);
      if (r < 0) break;
      const auto b = static_cast<size_t>(region->beg[0]);
      const auto e = static_cast<size_t>(region->end[0]);
      if (e > b) {
        out.emplace_back(b, e);
        start = e;
      } else {  // an empty match splits nothing: step over one character
        start = b + 1;
        while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
          ++start;
      }
    }
    return out;
  }

 private:
  std::shared_ptr<regex_t> re_;
};

// ---------------------------------------------------------------------------------------------
// Patterns and split behaviours (HF's Pattern and SplitDelimiterBehavior).

struct Match {
  size_t begin, end;  // characters
  bool match;
};
using Pattern = std::function<std::vector<Match>(const NStr&)>;

// Covers [0, n) with the given matches and the gaps between them.
std::vector<Match> with_gaps(const std::vector<std::pair<size_t, size_t>>& found, size_t n) {
  std::vector<Match> out;
  size_t prev = 0;
  for (const auto& [b, e] : found) {
    if (b > prev) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev < n) out.push_back({prev, n, false});
  return out;
}

Pattern char_pattern(std::function<bool(char32_t)> pred) {
  return [pred = std::move(pred)](const NStr& s) {
    std::vector<std::pair<size_t, size_t>> found;
    for (size_t i = 0; i < s.size(); ++i)
      if (pred(s[i].c)) found.emplace_back(i, i + 1);
    return with_gaps(found, s.size());
  };
}

Pattern literal_pattern(std::u32string lit) {
  return [lit = std::move(lit)](const NStr& s) {
    std::vector<std::pair<size_t, size_t>> found;
    if (!lit.empty())
      for (size_t i = 0; i + lit.size() <= s.size();) {
        bool eq = true;
        for (size_t k = 0; k < lit.size() && eq; ++k) eq = s[i + k].c == lit[k];
        if (eq) {
          found.emplace_back(i, i + lit.size());
          i += lit.size();
        } else {
          ++i;
        }
      }
    return with_gaps(found, s.size());
  };
}

Pattern regex_pattern(std::shared_ptr<const Regex> re) {
  return [re = std::move(re)](const NStr& s) {
    const std::vector<size_t> starts = byte_starts(s);
    std::vector<std::pair<size_t, size_t>> found;
    for (const auto& [b, e] : re->find_all(to_utf8(s)))
      found.emplace_back(char_at_byte(starts, b), char_at_byte(starts, e));
    return with_gaps(found, s.size());
  };
}

Pattern invert(Pattern p) {
  return [p = std::move(p)](const NStr& s) {
    auto m = p(s);
    for (auto& x : m) x.match = !x.match;
    return m;
  };
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

std::vector<NStr> split(const NStr& s, const std::vector<Match>& matches, Behavior behavior) {
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;  // (range, remove)
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& m : matches) parts.push_back({{m.begin, m.end}, false});
      break;
    case Behavior::kRemoved:
      for (const auto& m : matches) parts.push_back({{m.begin, m.end}, m.match});
      break;
    case Behavior::kContiguous: {
      bool prev = false;
      for (const auto& m : matches) {
        if (m.match == prev && !parts.empty())
          parts.back().first.second = m.end;
        else
          parts.push_back({{m.begin, m.end}, false});
        prev = m.match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool prev = false;
      for (const auto& m : matches) {
        if (m.match && !prev && !parts.empty())
          parts.back().first.second = m.end;
        else
          parts.push_back({{m.begin, m.end}, false});
        prev = m.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->match && !prev && !parts.empty())
          parts.back().first.first = it->begin;
        else
          parts.push_back({{it->begin, it->end}, false});
        prev = it->match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
  }
  std::vector<NStr> out;
  for (const auto& [range, remove] : parts)
    if (!remove && range.second > range.first)
      out.emplace_back(s.begin() + static_cast<std::ptrdiff_t>(range.first),
                       s.begin() + static_cast<std::ptrdiff_t>(range.second));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading the file.

struct Reader {
  std::string source;

  [[noreturn]] void error(const std::string& where, const std::string& what) const {
    fail(source, ": ", where, ": ", what);
  }
  const json& need(const json& j, const char* key, const std::string& where) const {
    if (!j.is_object() || !j.contains(key)) error(where, cat("missing field '", key, "'"));
    return j.at(key);
  }
  bool flag(const json& j, const char* key, bool def, const std::string& where) const {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return def;
    if (!j.at(key).is_boolean()) error(where, cat("field '", key, "' must be true or false"));
    return j.at(key).get<bool>();
  }
  std::string str(const json& j, const char* key, const std::string& where) const {
    const json& v = need(j, key, where);
    if (!v.is_string()) error(where, cat("field '", key, "' must be a string"));
    return v.get<std::string>();
  }
  std::optional<std::string> opt_str(const json& j, const char* key,
                                     const std::string& where) const {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return std::nullopt;
    return str(j, key, where);
  }
  int64_t integer(const json& j, const char* key, const std::string& where, int64_t lo,
                  int64_t hi) const {
    const json& v = need(j, key, where);
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      error(where, cat("field '", key, "' must be an integer in [", lo, ", ", hi, "]"));
    return v.get<int64_t>();
  }
  std::string type(const json& j, const std::string& where) const {
    if (!j.is_object()) error(where, "expected an object");
    return str(j, "type", where);
  }
  char32_t one_char(const std::string& s, const std::string& where) const {
    const std::u32string u = uc::decode_utf8(s);
    if (u.size() != 1) error(where, cat("'", s, "' must be exactly one character"));
    return u[0];
  }
  Pattern pattern(const json& j, const std::string& where) const {
    const json& p = need(j, "pattern", where);
    if (p.is_object() && p.contains("String") && p.at("String").is_string())
      return literal_pattern(uc::decode_utf8(p.at("String").get<std::string>()));
    if (p.is_object() && p.contains("Regex") && p.at("Regex").is_string())
      return regex_pattern(
          std::make_shared<const Regex>(p.at("Regex").get<std::string>(), source + ": " + where));
    error(where, "field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  }
  Behavior behavior(const json& j, const std::string& where, Behavior def) const {
    if (!j.contains("behavior")) return def;
    const std::string b = str(j, "behavior", where);
    if (b == "Removed") return Behavior::kRemoved;
    if (b == "Isolated") return Behavior::kIsolated;
    if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return Behavior::kMergedWithNext;
    if (b == "Contiguous") return Behavior::kContiguous;
    error(where, cat("unknown behavior '", b,
                     "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                     "Contiguous)"));
  }
};

std::vector<uint8_t> base64_decode(const std::string& in, const Reader& r,
                                   const std::string& where) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r') continue;
    const int v = value(c);
    if (v < 0) r.error(where, "precompiled_charsmap is not base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Normalizers

using Normalizer = std::function<void(NStr&)>;

void filter(NStr& s, const std::function<bool(char32_t)>& keep) {
  s.erase(std::remove_if(s.begin(), s.end(), [&](const NChar& ch) { return !keep(ch.c); }),
          s.end());
}

void lowercase(NStr& s) {
  NStr out;
  out.reserve(s.size());
  std::u32string lower;
  for (const auto& ch : s) {
    lower.clear();
    uc::append_lower(lower, ch.c);
    for (char32_t c : lower) out.push_back({c, ch.begin, ch.end});
  }
  s = std::move(out);
}

// Rewrites s[begin, end) as `with`, aligned as the library aligns a rewrite: output character k
// takes the bytes of input character k, the extra ones those of the last input character.
void align_rewrite(const NStr& s, size_t begin, size_t end, std::u32string_view with, NStr& out) {
  for (size_t k = 0; k < with.size(); ++k) {
    const NChar& from = s[begin + std::min(k, end - begin - 1)];
    out.push_back({with[k], from.begin, from.end});
  }
}

// The library's NormalizedString::transform: each (char, change) consumes the next source
// character (change <= 0, then skips -change more) or is inserted after the previous one
// (change > 0), and takes the alignment of the character it consumed or follows.
void apply_transform(NStr& s, const std::vector<std::pair<char32_t, int64_t>>& t) {
  NStr out;
  size_t idx = 0;
  for (const auto& [c, change] : t) {
    NChar ch{c, 0, 0};
    if (change > 0) {
      if (idx > 0 && idx - 1 < s.size()) ch = {c, s[idx - 1].begin, s[idx - 1].end};
    } else {
      if (idx < s.size()) ch = {c, s[idx].begin, s[idx].end};
      idx += 1 + static_cast<size_t>(-change);
    }
    out.push_back(ch);
  }
  s = std::move(out);
}

// A Unicode normal form, applied to runs of characters that normalize independently of their
// neighbours (a starter and its combining marks; more where composition joins them, as Hangul
// jamo), each aligned as a rewrite.
void normal_form(NStr& s, std::u32string (*form)(std::u32string_view)) {
  if (s.empty()) return;
  std::u32string all;
  for (const auto& ch : s) all.push_back(ch.c);
  // Segment starts: a character with combining class 0 begins a new segment.
  std::vector<size_t> cuts;
  for (size_t i = 0; i < s.size(); ++i)
    if (i == 0 ||
        utf8proc_get_property(static_cast<utf8proc_int32_t>(s[i].c))->combining_class == 0)
      cuts.push_back(i);
  cuts.push_back(s.size());
  NStr out;
  size_t a = 0;  // index into cuts
  while (a + 1 < cuts.size()) {
    size_t b = a + 1;
    std::u32string norm = form(all.substr(cuts[a], cuts[b] - cuts[a]));
    // Join the next segment while normalizing them together differs from one after the other
    // (at most 32 segments: past that, the whole-string check below aligns the text as one).
    while (b + 1 < cuts.size() && b - a < 32) {
      const std::u32string next = form(all.substr(cuts[b], cuts[b + 1] - cuts[b]));
      const std::u32string joint = form(all.substr(cuts[a], cuts[b + 1] - cuts[a]));
      if (joint == norm + next) break;
      norm = joint;
      ++b;
    }
    if (norm == all.substr(cuts[a], cuts[b] - cuts[a]))
      out.insert(out.end(), s.begin() + static_cast<std::ptrdiff_t>(cuts[a]),
                 s.begin() + static_cast<std::ptrdiff_t>(cuts[b]));
    else
      align_rewrite(s, cuts[a], cuts[b], norm, out);
    a = b;
  }
  std::u32string joined;
  for (const auto& ch : out) joined.push_back(ch.c);
  if (joined != form(all)) {  // a composition longer than the joins: the text stays exact
    out.clear();
    align_rewrite(s, 0, s.size(), form(all), out);
  }
  s = std::move(out);
}

void strip(NStr& s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && uc::is_white_space(s[b].c)) ++b;
  if (right)
    while (e > b && uc::is_white_space(s[e - 1].c)) --e;
  s = NStr(s.begin() + static_cast<std::ptrdiff_t>(b), s.begin() + static_cast<std::ptrdiff_t>(e));
}

void prepend(NStr& s, std::u32string_view text) {
  if (s.empty()) return;
  replace_range(s, 0, 0, text);
}

void replace_all(NStr& s, const Pattern& pattern, std::u32string_view content) {
  const auto matches = pattern(s);
  NStr out;
  for (const auto& m : matches) {
    if (!m.match) {
      out.insert(out.end(), s.begin() + static_cast<std::ptrdiff_t>(m.begin),
                 s.begin() + static_cast<std::ptrdiff_t>(m.end));
      continue;
    }
    // The library aligns what it inserts with the last character it replaced.
    for (char32_t c : content) out.push_back({c, s[m.end - 1].begin, s[m.end - 1].end});
  }
  s = std::move(out);
}

// BertNormalizer's control characters: category C* as the library's tables know it, which
// lists no unassigned code points (Cn).
bool is_control_hf(char32_t c) {
  return uc::is_other(c) &&
         utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_CN;
}

bool is_cjk_hf(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// SentencePiece's precompiled character map: a double-array trie over UTF-8 byte strings whose
// values index NUL-terminated replacements.
class CharsMap {
 public:
  CharsMap(const std::vector<uint8_t>& blob, const Reader& r, const std::string& where) {
    if (blob.size() < 4) r.error(where, "precompiled_charsmap is shorter than its header");
    const uint32_t trie_bytes =
        blob[0] | (blob[1] << 8) | (blob[2] << 16) | (static_cast<uint32_t>(blob[3]) << 24);
    if (trie_bytes % 4 != 0 || trie_bytes == 0 || 4 + static_cast<size_t>(trie_bytes) > blob.size())
      r.error(where, cat("precompiled_charsmap declares a trie of ", trie_bytes, " bytes in ",
                         blob.size()));
    for (size_t i = 0; i < trie_bytes / 4; ++i) {
      const size_t o = 4 + 4 * i;
      trie_.push_back(blob[o] | (blob[o + 1] << 8) | (blob[o + 2] << 16) |
                      (static_cast<uint32_t>(blob[o + 3]) << 24));
    }
    normalized_.assign(reinterpret_cast<const char*>(blob.data()) + 4 + trie_bytes,
                       blob.size() - 4 - trie_bytes);
  }

  // The replacement of the shortest key that prefixes `chunk`, as the library's lookup returns.
  std::optional<std::string_view> transform(std::string_view chunk) const {
    auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
    size_t node = offset(trie_[0]);
    for (unsigned char c : chunk) {
      if (c == 0) break;
      node ^= c;
      if (node >= trie_.size()) return std::nullopt;
      const uint32_t unit = trie_[node];
      if ((unit & ((1u << 31) | 0xFF)) != c) return std::nullopt;
      node ^= offset(unit);
      if (node >= trie_.size()) return std::nullopt;
      if ((unit >> 8) & 1) {
        const size_t at = trie_[node] & ((1u << 31) - 1);
        if (at >= normalized_.size()) return std::nullopt;
        const size_t stop = normalized_.find('\0', at);
        return std::string_view(normalized_)
            .substr(at, (stop == std::string::npos ? normalized_.size() : stop) - at);
      }
    }
    return std::nullopt;
  }

  // The library's normalization, transformation list and all: a rewrite that shortens text
  // charges the removal to the last character emitted so far, and none is charged before the
  // first, which shifts the alignment of what follows (offsets match the library's, quirk too).
  void normalize(NStr& s) const {
    std::u32string text;
    for (const auto& ch : s) text.push_back(ch.c);
    std::vector<std::pair<char32_t, int64_t>> t;
    bool modified = false;
    auto replace = [&](size_t old_count, std::string_view repl) {
      const std::u32string n = uc::decode_utf8(repl);
      const int64_t diff = static_cast<int64_t>(n.size()) - static_cast<int64_t>(old_count);
      for (char32_t c : n) t.emplace_back(c, 0);
      if (diff > 0)
        for (int64_t k = 0; k < diff; ++k) t[t.size() - 1 - static_cast<size_t>(k)].second = 1;
      else if (diff < 0 && !t.empty())
        t.back().second += diff;
      modified = true;
    };
    for (const auto& [b, e] : uc::graphemes(text)) {
      const std::string g = to_utf8(s, b, e);
      if (g.size() < 6)
        if (auto repl = transform(g)) {
          replace(e - b, *repl);
          continue;
        }
      for (size_t i = b; i < e; ++i) {
        if (auto repl = transform(to_utf8(s, i, i + 1)))
          replace(1, *repl);
        else
          t.emplace_back(s[i].c, 0);
      }
    }
    if (modified) apply_transform(s, t);
  }

 private:
  std::vector<uint32_t> trie_;
  std::string normalized_;
};

Normalizer make_normalizer(const json& j, const Reader& r, const std::string& where) {
  const std::string type = r.type(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "Sequence") {
    const json& list = r.need(j, "normalizers", at);
    if (!list.is_array()) r.error(at, "field 'normalizers' must be a list");
    std::vector<Normalizer> parts;
    for (size_t i = 0; i < list.size(); ++i)
      parts.push_back(make_normalizer(list[i], r, cat(where, ".normalizers[", i, "]")));
    return [parts](NStr& s) {
      for (const auto& p : parts) p(s);
    };
  }
  if (type == "BertNormalizer") {
    const bool clean = r.flag(j, "clean_text", true, at);
    const bool chinese = r.flag(j, "handle_chinese_chars", true, at);
    const bool lower = r.flag(j, "lowercase", true, at);
    const bool strip_accents = r.flag(j, "strip_accents", lower, at);
    return [=](NStr& s) {
      if (clean) {
        filter(s, [](char32_t c) {
          return !(c == 0 || c == 0xFFFD ||
                   (c != U'\t' && c != U'\n' && c != U'\r' && is_control_hf(c)));
        });
        for (auto& ch : s)
          if (uc::is_white_space(ch.c)) ch.c = U' ';
      }
      if (chinese) {
        NStr out;
        for (const auto& ch : s) {
          if (is_cjk_hf(ch.c)) {
            out.push_back({U' ', ch.begin, ch.end});
            out.push_back(ch);
            out.push_back({U' ', ch.begin, ch.end});
          } else {
            out.push_back(ch);
          }
        }
        s = std::move(out);
      }
      if (strip_accents) {
        normal_form(s, uc::nfd);
        filter(s, [](char32_t c) { return !uc::is_nonspacing_mark(c); });
      }
      if (lower) lowercase(s);
    };
  }
  if (type == "NFC") return [](NStr& s) { normal_form(s, uc::nfc); };
  if (type == "NFD") return [](NStr& s) { normal_form(s, uc::nfd); };
  if (type == "NFKC") return [](NStr& s) { normal_form(s, uc::nfkc); };
  if (type == "NFKD") return [](NStr& s) { normal_form(s, uc::nfkd); };
  if (type == "Lowercase") return lowercase;
  if (type == "StripAccents")
    return [](NStr& s) { filter(s, [](char32_t c) { return !uc::is_mark(c); }); };
  if (type == "Strip") {
    const bool left = r.flag(j, "strip_left", true, at), right = r.flag(j, "strip_right", true, at);
    return [=](NStr& s) { strip(s, left, right); };
  }
  if (type == "Prepend") {
    const std::u32string text = uc::decode_utf8(r.str(j, "prepend", at));
    return [text](NStr& s) { prepend(s, text); };
  }
  if (type == "Replace") {
    Pattern p = r.pattern(j, at);
    const std::u32string content = uc::decode_utf8(r.str(j, "content", at));
    return [p, content](NStr& s) { replace_all(s, p, content); };
  }
  if (type == "Precompiled") {
    const json& blob = r.need(j, "precompiled_charsmap", at);
    if (blob.is_null()) return [](NStr&) {};
    if (!blob.is_string()) r.error(at, "field 'precompiled_charsmap' must be a base64 string");
    auto map =
        std::make_shared<const CharsMap>(base64_decode(blob.get<std::string>(), r, at), r, at);
    return [map](NStr& s) { map->normalize(s); };
  }
  r.error(where, cat("normalizer '", type,
                     "' is not supported (slimbert reads BertNormalizer, NFC, NFD, NFKC, NFKD, "
                     "Lowercase, Strip, StripAccents, Replace, Prepend, Precompiled, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

using PreTokenizer = std::function<void(std::vector<NStr>&)>;

void split_each(std::vector<NStr>& words, const std::function<std::vector<NStr>(NStr&)>& f) {
  std::vector<NStr> out;
  for (auto& w : words)
    for (auto& part : f(w))
      if (!part.empty()) out.push_back(std::move(part));
  words = std::move(out);
}

const std::array<char32_t, 256>& bytes_to_chars() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = direct[b] ? static_cast<char32_t>(b) : next++;
    return t;
  }();
  return table;
}

const std::shared_ptr<const Regex>& gpt2_regex() {
  static const auto re = std::make_shared<const Regex>(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", "ByteLevel");
  return re;
}

PreTokenizer make_pre_tokenizer(const json& j, const Reader& r, const std::string& where) {
  const std::string type = r.type(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "Sequence") {
    const json& list = r.need(j, "pretokenizers", at);
    if (!list.is_array()) r.error(at, "field 'pretokenizers' must be a list");
    std::vector<PreTokenizer> parts;
    for (size_t i = 0; i < list.size(); ++i)
      parts.push_back(make_pre_tokenizer(list[i], r, cat(where, ".pretokenizers[", i, "]")));
    return [parts](std::vector<NStr>& w) {
      for (const auto& p : parts) p(w);
    };
  }
  if (type == "BertPreTokenizer")
    return [](std::vector<NStr>& w) {
      static const Pattern space = char_pattern(uc::is_white_space);
      static const Pattern punct = char_pattern(uc::is_bert_punctuation);
      split_each(w, [](NStr& s) { return split(s, space(s), Behavior::kRemoved); });
      split_each(w, [](NStr& s) { return split(s, punct(s), Behavior::kIsolated); });
    };
  if (type == "WhitespaceSplit")
    return [](std::vector<NStr>& w) {
      static const Pattern space = char_pattern(uc::is_white_space);
      split_each(w, [](NStr& s) { return split(s, space(s), Behavior::kRemoved); });
    };
  if (type == "Whitespace")
    return [](std::vector<NStr>& w) {
      // \w+|[^\w\s]+, what is matched kept
      split_each(w, [](NStr& s) {
        std::vector<NStr> out;
        size_t i = 0;
        while (i < s.size()) {
          const auto kind = [](char32_t c) {
            return uc::is_word_char(c) ? 1 : uc::is_white_space(c) ? 0 : 2;
          };
          const int k = kind(s[i].c);
          size_t j = i + 1;
          while (j < s.size() && kind(s[j].c) == k) ++j;
          if (k != 0)
            out.emplace_back(s.begin() + static_cast<std::ptrdiff_t>(i),
                             s.begin() + static_cast<std::ptrdiff_t>(j));
          i = j;
        }
        return out;
      });
    };
  if (type == "Punctuation") {
    const Behavior b = r.behavior(j, at, Behavior::kIsolated);
    return [b](std::vector<NStr>& w) {
      static const Pattern punct = char_pattern(uc::is_bert_punctuation);
      split_each(w, [b](NStr& s) { return split(s, punct(s), b); });
    };
  }
  if (type == "Digits") {
    const Behavior b =
        r.flag(j, "individual_digits", false, at) ? Behavior::kIsolated : Behavior::kContiguous;
    return [b](std::vector<NStr>& w) {
      static const Pattern digits = char_pattern(uc::is_numeric);
      split_each(w, [b](NStr& s) { return split(s, digits(s), b); });
    };
  }
  if (type == "CharDelimiterSplit") {
    const char32_t d = r.one_char(r.str(j, "delimiter", at), at);
    const Pattern p = char_pattern([d](char32_t c) { return c == d; });
    return [p](std::vector<NStr>& w) {
      split_each(w, [&p](NStr& s) { return split(s, p(s), Behavior::kRemoved); });
    };
  }
  if (type == "Split") {
    Pattern p = r.pattern(j, at);
    if (r.flag(j, "invert", false, at)) p = invert(p);
    const Behavior b = r.behavior(j, at, Behavior::kRemoved);
    if (!j.contains("behavior")) r.error(at, "missing field 'behavior'");
    return
        [p, b](std::vector<NStr>& w) { split_each(w, [&](NStr& s) { return split(s, p(s), b); }); };
  }
  if (type == "Metaspace") {
    const char32_t repl = r.one_char(r.str(j, "replacement", at), at);
    std::string scheme = r.opt_str(j, "prepend_scheme", at).value_or("always");
    if (scheme != "always" && scheme != "first" && scheme != "never")
      r.error(at, cat("unknown prepend_scheme '", scheme, "' (expected always, first or never)"));
    if (j.contains("add_prefix_space") && !r.flag(j, "add_prefix_space", true, at)) {
      if (scheme != "never" && j.contains("prepend_scheme"))
        r.error(at, "add_prefix_space does not match declared prepend_scheme");
      scheme = "never";
    }
    const bool do_split = r.flag(j, "split", true, at);
    return [=](std::vector<NStr>& w) {
      split_each(w, [&](NStr& s) {
        for (auto& ch : s)
          if (ch.c == U' ') ch.c = repl;
        const bool first_ok = scheme == "always" || (scheme == "first" && s.front().begin == 0);
        if (scheme != "never" && first_ok && s.front().c != repl)
          prepend(s, std::u32string(1, repl));
        if (!do_split) return std::vector<NStr>{s};
        return split(s, char_pattern([repl](char32_t c) { return c == repl; })(s),
                     Behavior::kMergedWithNext);
      });
    };
  }
  if (type == "ByteLevel") {
    const bool prefix = r.flag(j, "add_prefix_space", true, at);
    const bool use_regex = r.flag(j, "use_regex", true, at);
    return [=](std::vector<NStr>& w) {
      split_each(w, [&](NStr& s) {
        if (prefix && s.front().c != U' ') prepend(s, U" ");
        std::vector<NStr> parts;
        if (use_regex)
          parts = split(s, regex_pattern(gpt2_regex())(s), Behavior::kIsolated);
        else
          parts.push_back(s);
        const auto& table = bytes_to_chars();
        for (auto& part : parts) {
          NStr mapped;
          std::string bytes;
          for (const auto& ch : part) {
            bytes.clear();
            uc::append_utf8(bytes, ch.c);
            for (unsigned char b : bytes) mapped.push_back({table[b], ch.begin, ch.end});
          }
          part = std::move(mapped);
        }
        return parts;
      });
    };
  }
  r.error(where, cat("pre-tokenizer '", type,
                     "' is not supported (slimbert reads BertPreTokenizer, ByteLevel, Metaspace, "
                     "Whitespace, WhitespaceSplit, Punctuation, Digits, Split, CharDelimiterSplit, "
                     "Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Models

// Ids past this are refused: the id -> token table is allocated from them (the largest
// vocabularies in use hold about 2^18 tokens).
constexpr int64_t kMaxVocab = int64_t{1} << 22;

struct Piece {
  int64_t id;
  std::string value;
  size_t begin, end;  // characters of the word
};

struct Model {
  std::string type;
  std::unordered_map<std::string, int64_t> vocab;
  std::optional<std::string> unk;
  virtual ~Model() = default;
  virtual std::vector<Piece> tokenize(const NStr& word) const = 0;

  std::optional<int64_t> find(const std::string& t) const {
    auto it = vocab.find(t);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }
};

void read_vocab_map(const json& j, Model& m, const Reader& r, const std::string& at) {
  const json& v = r.need(j, "vocab", at);
  if (!v.is_object()) r.error(at, "field 'vocab' must be an object of token: id");
  for (const auto& [token, id] : v.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxVocab)
      r.error(at, cat("vocab id of '", token, "' must be an integer in [0, ", kMaxVocab, ")"));
    m.vocab[token] = id.get<int64_t>();
  }
}

struct WordPieceModel : Model {
  std::string prefix = "##";
  size_t max_chars = 100;

  std::vector<Piece> tokenize(const NStr& word) const override {
    const int64_t unk_id = unk ? find(*unk).value_or(-1) : -1;
    auto whole_unk = [&] {
      if (unk_id < 0) fail("WordPiece: the unk_token '", unk.value_or(""), "' is not in vocab");
      return std::vector<Piece>{{unk_id, *unk, 0, word.size()}};
    };
    if (word.size() > max_chars) return whole_unk();
    std::vector<Piece> out;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      bool found = false;
      while (start < end) {
        std::string sub = (start > 0 ? prefix : std::string()) + to_utf8(word, start, end);
        if (auto id = find(sub)) {
          out.push_back({*id, std::move(sub), start, end});
          found = true;
          break;
        }
        --end;
      }
      if (!found) return whole_unk();
      start = end;
    }
    return out;
  }
};

struct WordLevelModel : Model {
  std::vector<Piece> tokenize(const NStr& word) const override {
    const std::string w = to_utf8(word);
    if (auto id = find(w)) return {{*id, w, 0, word.size()}};
    if (unk)
      if (auto id = find(*unk)) return {{*id, *unk, 0, word.size()}};
    fail("WordLevel: '", w, "' is not in vocab and there is no unk_token");
  }
};

struct BpeModel : Model {
  std::optional<std::string> prefix, suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merges;

  static uint64_t key(int64_t a, int64_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
  }

  std::vector<Piece> tokenize(const NStr& word) const override {
    if (word.empty()) return {};
    if (ignore_merges)
      if (auto id = find(to_utf8(word))) return {{*id, to_utf8(word), 0, word.size()}};
    struct Sym {
      int64_t id;
      size_t begin, end;
    };
    std::vector<Sym> syms;
    std::optional<Sym> pending_unk;
    for (size_t i = 0; i < word.size(); ++i) {
      std::string s = to_utf8(word, i, i + 1);
      if (i > 0 && prefix) s = *prefix + s;
      if (i + 1 == word.size() && suffix) s += *suffix;
      if (auto id = find(s)) {
        if (pending_unk) syms.push_back(*pending_unk);
        pending_unk.reset();
        syms.push_back({*id, i, i + 1});
        continue;
      }
      if (byte_fallback) {
        std::vector<int64_t> ids;
        for (unsigned char b : s) {
          char code[8];
          std::snprintf(code, sizeof code, "<0x%02X>", b);
          if (auto id = find(code))
            ids.push_back(*id);
          else
            break;
        }
        if (ids.size() == s.size()) {
          if (pending_unk) syms.push_back(*pending_unk);
          pending_unk.reset();
          for (int64_t id : ids) syms.push_back({id, i, i + 1});
          continue;
        }
      }
      if (!unk) continue;  // no unk token: the library drops the character
      const auto unk_id = find(*unk);
      if (!unk_id) fail("BPE: the unk_token '", *unk, "' is not in vocab");
      if (pending_unk && fuse_unk) {
        pending_unk->end = i + 1;
      } else {
        if (pending_unk) syms.push_back(*pending_unk);
        pending_unk = Sym{*unk_id, i, i + 1};
      }
    }
    if (pending_unk) syms.push_back(*pending_unk);
    // Merge the lowest-ranked adjacent pair, leftmost first, until none is left: a queue of
    // candidate merges over a linked list of symbols, O(n log n) as in the library (a word may
    // be a megabyte of letters).
    const size_t n = syms.size();
    std::vector<size_t> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) {
      prev[i] = i - 1;  // wraps to SIZE_MAX for the first: no neighbour
      next[i] = i + 1 < n ? i + 1 : SIZE_MAX;
    }
    using Candidate = std::tuple<int64_t, size_t, int64_t>;  // rank, left symbol, merged id
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto offer = [&](size_t left) {
      if (left == SIZE_MAX || next[left] == SIZE_MAX) return;
      auto it = merges.find(key(syms[left].id, syms[next[left]].id));
      if (it != merges.end()) queue.emplace(it->second.first, left, it->second.second);
    };
    for (size_t i = 0; i + 1 < n; ++i) offer(i);
    while (!queue.empty()) {
      const auto [rank, left, merged] = queue.top();
      queue.pop();
      // Stale: the left symbol was merged away, or its right neighbour changed since.
      if (!alive[left] || next[left] == SIZE_MAX) continue;
      const size_t right = next[left];
      auto it = merges.find(key(syms[left].id, syms[right].id));
      if (it == merges.end() || it->second.first != rank || it->second.second != merged) continue;
      syms[left] = {merged, syms[left].begin, syms[right].end};
      alive[right] = false;
      next[left] = next[right];
      if (next[right] != SIZE_MAX) prev[next[right]] = left;
      offer(prev[left]);
      offer(left);
    }
    std::vector<Sym> kept;
    for (size_t i = 0; i < n; ++i)
      if (alive[i]) kept.push_back(syms[i]);
    syms = std::move(kept);
    std::vector<Piece> out;
    for (const auto& s : syms) out.push_back({s.id, "", s.begin, s.end});
    return out;
  }
};

struct UnigramModel : Model {
  std::vector<std::pair<std::string, double>> pieces;
  std::optional<int64_t> unk_id;
  bool byte_fallback = false;
  double min_score = 0;
  size_t max_piece_bytes = 0;

  std::vector<Piece> tokenize(const NStr& word) const override {
    const std::string text = to_utf8(word);
    if (text.empty()) return {};
    const std::vector<size_t> starts = byte_starts(word);
    const size_t n = text.size();
    struct Node {
      int64_t id = -1;
      double score = 0;
      std::optional<size_t> from;
    };
    std::vector<Node> best(n + 1);
    const double unk_score = min_score - 10.0;
    for (size_t c = 0; c < word.size(); ++c) {
      const size_t at = starts[c];
      const double here = best[at].score;
      const size_t char_len = starts[c + 1] - at;
      bool single = false;
      for (size_t len = 1; len <= max_piece_bytes && at + len <= n; ++len) {
        auto it = vocab.find(text.substr(at, len));
        if (it == vocab.end()) continue;
        Node& target = best[at + len];
        const double cand = pieces[static_cast<size_t>(it->second)].second + here;
        if (!target.from || cand > target.score) target = {it->second, cand, at};
        if (len == char_len) single = true;
      }
      if (!single) {
        if (!unk_id) fail("Unigram: a character is not in vocab and the model has no unk_id");
        Node& target = best[at + char_len];
        const double cand = unk_score + here;
        if (!target.from || cand > target.score) target = {*unk_id, cand, at};
      }
    }
    // Back from the end; runs of unknown pieces fuse into one.
    std::vector<std::pair<size_t, size_t>> spans;  // bytes
    bool prev_unk = false;
    for (size_t end = n; end > 0;) {
      const Node& node = best[end];
      const size_t from = *node.from;
      const bool is_unk = unk_id && node.id == *unk_id;
      if (is_unk && prev_unk)
        spans.back().first = from;
      else
        spans.emplace_back(from, end);
      prev_unk = is_unk;
      end = from;
    }
    std::reverse(spans.begin(), spans.end());
    std::vector<Piece> out;
    for (const auto& [b, e] : spans) {
      const std::string s = text.substr(b, e - b);
      const size_t cb = char_at_byte(starts, b), ce = char_at_byte(starts, e);
      if (auto id = find(s)) {
        out.push_back({*id, s, cb, ce});
        continue;
      }
      if (byte_fallback) {
        std::vector<Piece> bytes;
        for (unsigned char ch : s) {
          char code[8];
          std::snprintf(code, sizeof code, "<0x%02X>", ch);
          if (auto id = find(code)) bytes.push_back({*id, code, cb, ce});
        }
        if (bytes.size() == s.size()) {
          out.insert(out.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      out.push_back({*unk_id, s, cb, ce});
    }
    return out;
  }
};

std::unique_ptr<Model> make_model(const json& j, const Reader& r) {
  const std::string where = "model";
  if (!j.is_object()) r.error(where, "expected an object");
  std::string type;
  if (j.contains("type")) {
    type = r.str(j, "type", where);
  } else if (j.contains("merges")) {
    type = "BPE";
  } else if (j.contains("vocab") && j.at("vocab").is_array()) {
    type = "Unigram";
  } else if (j.contains("continuing_subword_prefix")) {
    type = "WordPiece";
  } else {
    type = "WordLevel";
  }
  const std::string at = where + " (" + type + ")";
  if (type == "WordPiece") {
    auto m = std::make_unique<WordPieceModel>();
    read_vocab_map(j, *m, r, at);
    m->unk = r.opt_str(j, "unk_token", at).value_or("[UNK]");
    m->prefix = r.opt_str(j, "continuing_subword_prefix", at).value_or("##");
    if (j.contains("max_input_chars_per_word"))
      m->max_chars = static_cast<size_t>(
          r.integer(j, "max_input_chars_per_word", at, 0, std::numeric_limits<int32_t>::max()));
    m->type = type;
    return m;
  }
  if (type == "WordLevel") {
    auto m = std::make_unique<WordLevelModel>();
    read_vocab_map(j, *m, r, at);
    m->unk = r.opt_str(j, "unk_token", at);
    m->type = type;
    return m;
  }
  if (type == "BPE") {
    auto m = std::make_unique<BpeModel>();
    read_vocab_map(j, *m, r, at);
    if (j.contains("dropout") && !j.at("dropout").is_null() &&
        !(j.at("dropout").is_number() && j.at("dropout").get<double>() == 0.0))
      r.error(at, "BPE dropout is a training-time option; inference needs dropout null");
    m->unk = r.opt_str(j, "unk_token", at);
    m->prefix = r.opt_str(j, "continuing_subword_prefix", at);
    m->suffix = r.opt_str(j, "end_of_word_suffix", at);
    m->fuse_unk = r.flag(j, "fuse_unk", false, at);
    m->byte_fallback = r.flag(j, "byte_fallback", false, at);
    m->ignore_merges = r.flag(j, "ignore_merges", false, at);
    const json& merges = r.need(j, "merges", at);
    if (!merges.is_array()) r.error(at, "field 'merges' must be a list");
    const size_t prefix_len = m->prefix ? m->prefix->size() : 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      std::string a, b;
      const json& e = merges[i];
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          r.error(at, cat("merges[", i, "] '", s, "' must be two tokens separated by one space"));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        r.error(at, cat("merges[", i, "] must be \"a b\" or [\"a\", \"b\"]"));
      }
      const auto ia = m->find(a), ib = m->find(b);
      if (!ia || !ib) r.error(at, cat("merges[", i, "]: '", !ia ? a : b, "' is not in vocab"));
      const std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
      const auto im = m->find(merged);
      if (!im) r.error(at, cat("merges[", i, "]: the merged token '", merged, "' is not in vocab"));
      m->merges.emplace(BpeModel::key(*ia, *ib), std::make_pair(static_cast<int64_t>(i), *im));
    }
    m->type = type;
    return m;
  }
  if (type == "Unigram") {
    auto m = std::make_unique<UnigramModel>();
    const json& v = r.need(j, "vocab", at);
    if (!v.is_array() || v.empty()) r.error(at, "field 'vocab' must be a non-empty list");
    m->min_score = std::numeric_limits<double>::max();
    for (size_t i = 0; i < v.size(); ++i) {
      const json& e = v[i];
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
        r.error(at, cat("vocab[", i, "] must be [piece, score]"));
      const std::string piece = e[0].get<std::string>();
      const double score = e[1].get<double>();
      m->pieces.emplace_back(piece, score);
      m->vocab.emplace(piece, static_cast<int64_t>(i));
      m->min_score = std::min(m->min_score, score);
      m->max_piece_bytes = std::max(m->max_piece_bytes, piece.size());
    }
    if (j.contains("unk_id") && !j.at("unk_id").is_null()) {
      m->unk_id = r.integer(j, "unk_id", at, 0, static_cast<int64_t>(v.size()) - 1);
      m->unk = m->pieces[static_cast<size_t>(*m->unk_id)].first;
    }
    m->byte_fallback = r.flag(j, "byte_fallback", false, at);
    m->type = type;
    return m;
  }
  r.error(where, cat("model '", type,
                     "' is not supported (slimbert reads WordPiece, BPE, Unigram, WordLevel)"));
}

// ---------------------------------------------------------------------------------------------
// Post-processors: they act on the list of encodings (the first sequence, then the pair).

using Encodings = std::vector<std::vector<HfToken>>;

struct Processor {
  // texts: the source of each encoding (trim_offsets steps over its characters)
  std::function<void(Encodings&, bool add_special, const std::vector<std::string_view>& texts)>
      process;
  std::function<int64_t(bool pair)> added;
  std::optional<std::string> cls, sep;
};

HfToken special_token(const std::string& token, int64_t id, int64_t type_id) {
  return {id, token, type_id, true, 0, std::nullopt};
}

void set_type(std::vector<HfToken>& e, int64_t type_id) {
  for (auto& t : e) t.type_id = type_id;
}

// Byte-level tokens carry their leading space ('Ġ'); their offsets leave it out, as the library's
// trim_offsets does (except the one space add_prefix_space put before the first token).
// It steps over characters of the source text (the library's character offsets; its byte offsets
// step bytes, which for a multi-byte space lands inside a character).
void trim_offsets(std::vector<HfToken>& enc, bool add_prefix_space, std::string_view text) {
  auto next = [&](size_t at) {
    ++at;
    while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
    return at;
  };
  auto prev = [&](size_t at) {
    --at;
    while (at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
    return at;
  };
  for (size_t i = 0; i < enc.size(); ++i) {
    auto& t = enc[i];
    if (!t.bytes) continue;
    const std::u32string u = uc::decode_utf8(t.token);
    auto space = [](char32_t c) { return c == 0x120 || uc::is_white_space(c); };
    size_t lead = 0, trail = 0;
    while (lead < u.size() && space(u[lead])) ++lead;
    while (trail < u.size() && space(u[u.size() - 1 - trail])) ++trail;
    auto& [b, e] = *t.bytes;
    if (lead > 0) {
      const bool first = i == 0 || b == 0;
      if (first && add_prefix_space && lead == 1) lead = 0;
      for (size_t k = 0; k < lead && b < e; ++k) b = std::min(next(b), e);
    }
    if (trail > 0) {
      size_t to = e;
      size_t k = 0;
      for (; k < trail && to > 0; ++k) to = prev(to);
      if (k == trail) e = std::max(to, b);
    }
  }
}

std::pair<std::string, int64_t> token_and_id(const json& j, const char* key, const Reader& r,
                                             const std::string& at) {
  const json& v = r.need(j, key, at);
  if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer())
    r.error(at, cat("field '", key, "' must be [token, id]"));
  return {v[0].get<std::string>(), v[1].get<int64_t>()};
}

Processor make_processor(const json& j, const Reader& r, const std::string& where) {
  const std::string type = r.type(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "Sequence") {
    const json& list = r.need(j, "processors", at);
    if (!list.is_array()) r.error(at, "field 'processors' must be a list");
    std::vector<Processor> parts;
    Processor p;
    for (size_t i = 0; i < list.size(); ++i) {
      parts.push_back(make_processor(list[i], r, cat(where, ".processors[", i, "]")));
      if (parts.back().cls) p.cls = parts.back().cls;
      if (parts.back().sep) p.sep = parts.back().sep;
    }
    p.process = [parts](Encodings& e, bool add, const std::vector<std::string_view>& texts) {
      for (const auto& q : parts) q.process(e, add, texts);
    };
    p.added = [parts](bool pair) {
      int64_t n = 0;
      for (const auto& q : parts) n += q.added(pair);
      return n;
    };
    return p;
  }
  if (type == "ByteLevel") {  // it trims offsets only
    const bool trim = r.flag(j, "trim_offsets", true, at);
    const bool prefix = r.flag(j, "add_prefix_space", true, at);
    return {[=](Encodings& e, bool, const std::vector<std::string_view>& texts) {
              if (trim)
                for (size_t i = 0; i < e.size(); ++i)
                  if (!e[i].empty()) trim_offsets(e[i], prefix, texts[e[i][0].sequence]);
            },
            [](bool) { return int64_t{0}; },
            {},
            {}};
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const auto sep = token_and_id(j, "sep", r, at), cls = token_and_id(j, "cls", r, at);
    const bool roberta = type == "RobertaProcessing";
    const bool trim = roberta && r.flag(j, "trim_offsets", true, at);
    const bool prefix = r.flag(j, "add_prefix_space", true, at);
    Processor p;
    p.cls = cls.first;
    p.sep = sep.first;
    p.added = [roberta](bool pair) -> int64_t { return pair ? (roberta ? 4 : 3) : 2; };
    p.process = [=](Encodings& e, bool add, const std::vector<std::string_view>& texts) {
      if (trim)
        for (size_t i = 0; i < e.size(); ++i) trim_offsets(e[i], prefix, texts[i]);
      if (roberta)
        for (auto& enc : e) set_type(enc, 0);
      if (!add) return;
      e[0].insert(e[0].begin(), special_token(cls.first, cls.second, 0));
      e[0].push_back(special_token(sep.first, sep.second, 0));
      if (e.size() > 1) {
        const int64_t t = roberta ? 0 : 1;
        if (roberta) e[1].insert(e[1].begin(), special_token(sep.first, sep.second, 0));
        e[1].push_back(special_token(sep.first, sep.second, t));
      }
    };
    return p;
  }
  if (type == "TemplateProcessing") {
    struct Special {
      std::vector<int64_t> ids;
      std::vector<std::string> tokens;
    };
    std::unordered_map<std::string, Special> specials;
    if (j.contains("special_tokens")) {
      const json& st = j.at("special_tokens");
      if (!st.is_object()) r.error(at, "field 'special_tokens' must be an object");
      for (const auto& [name, v] : st.items()) {
        Special s;
        const json& ids = r.need(v, "ids", at);
        const json& tokens = r.need(v, "tokens", at);
        if (!ids.is_array() || !tokens.is_array() || ids.size() != tokens.size())
          r.error(at,
                  cat("special_tokens '", name, "' needs lists 'ids' and 'tokens' of one length"));
        for (size_t i = 0; i < ids.size(); ++i) {
          if (!ids[i].is_number_integer() || !tokens[i].is_string())
            r.error(at, cat("special_tokens '", name, "': ids are integers, tokens strings"));
          s.ids.push_back(ids[i].get<int64_t>());
          s.tokens.push_back(tokens[i].get<std::string>());
        }
        specials[name] = std::move(s);
      }
    }
    struct Item {
      bool sequence;
      int which;         // 0 = A, 1 = B
      std::string name;  // special token
      int64_t type_id;
    };
    auto read_template = [&](const char* key) {
      std::vector<Item> items;
      const json& list = r.need(j, key, at);
      if (!list.is_array()) r.error(at, cat("field '", key, "' must be a list"));
      for (const auto& e : list) {
        if (e.is_object() && e.contains("Sequence")) {
          const json& s = e.at("Sequence");
          const std::string id = r.str(s, "id", at);
          if (id != "A" && id != "B")
            r.error(at, cat("template sequence '", id, "' is not A or B"));
          items.push_back({true, id == "B" ? 1 : 0, "", r.integer(s, "type_id", at, 0, 1 << 20)});
        } else if (e.is_object() && e.contains("SpecialToken")) {
          const json& s = e.at("SpecialToken");
          const std::string id = r.str(s, "id", at);
          if (!specials.count(id))
            r.error(at, cat("template uses special token '", id, "' missing from special_tokens"));
          items.push_back({false, 0, id, r.integer(s, "type_id", at, 0, 1 << 20)});
        } else {
          r.error(at, cat("field '", key, "': each item is {\"Sequence\"} or {\"SpecialToken\"}"));
        }
      }
      return items;
    };
    const std::vector<Item> single = read_template("single"), pair = read_template("pair");
    Processor p;
    for (const auto& it : single) {
      if (it.sequence) continue;
      const auto& s = specials.at(it.name);
      if (s.tokens.size() != 1) continue;
      (p.cls ? p.sep : p.cls) = s.tokens[0];
    }
    p.added = [=](bool is_pair) {
      int64_t n = 0;
      for (const auto& it : is_pair ? pair : single)
        if (!it.sequence) n += static_cast<int64_t>(specials.at(it.name).ids.size());
      return n;
    };
    p.process = [=](Encodings& e, bool add, const std::vector<std::string_view>&) {
      Encodings out;
      for (const auto& it : e.size() > 1 ? pair : single) {
        if (it.sequence) {
          if (static_cast<size_t>(it.which) >= e.size()) continue;
          auto enc = e[static_cast<size_t>(it.which)];
          set_type(enc, it.type_id);
          out.push_back(std::move(enc));
        } else if (add) {
          const auto& s = specials.at(it.name);
          std::vector<HfToken> enc;
          for (size_t i = 0; i < s.ids.size(); ++i)
            enc.push_back(special_token(s.tokens[i], s.ids[i], it.type_id));
          out.push_back(std::move(enc));
        }
      }
      e = std::move(out);
    };
    return p;
  }
  r.error(where, cat("post-processor '", type,
                     "' is not supported (slimbert reads BertProcessing, RobertaProcessing, "
                     "TemplateProcessing, ByteLevel, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Decoders: a list of tokens in, a list of strings out; the result is their concatenation.

using Decoder = std::function<void(std::vector<std::string>&)>;

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(const std::string& in) {
  std::string out;
  size_t i = 0;
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(in[k]); };
  while (i < in.size()) {
    const unsigned char b = byte(i);
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    size_t k = 1;
    for (; k <= need && i + k < in.size(); ++k) {
      const unsigned char c = byte(i + k);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
    }
    if (need > 0 && k == need + 1) {
      out.append(in, i, need + 1);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += need > 0 && k == need + 1 ? need + 1 : std::max<size_t>(k, 1);
  }
  return out;
}

std::string replace_str(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

std::string cleanup_spaces(std::string s) {
  static const std::pair<const char*, const char*> kFixes[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
      {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kFixes) s = replace_str(std::move(s), from, to);
  return s;
}

Decoder make_decoder(const json& j, const Reader& r, const std::string& where) {
  const std::string type = r.type(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "Sequence") {
    const json& list = r.need(j, "decoders", at);
    if (!list.is_array()) r.error(at, "field 'decoders' must be a list");
    std::vector<Decoder> parts;
    for (size_t i = 0; i < list.size(); ++i)
      parts.push_back(make_decoder(list[i], r, cat(where, ".decoders[", i, "]")));
    return [parts](std::vector<std::string>& t) {
      for (const auto& p : parts) p(t);
    };
  }
  if (type == "ByteLevel")
    return [](std::vector<std::string>& tokens) {
      static const std::unordered_map<char32_t, unsigned char> to_byte = [] {
        std::unordered_map<char32_t, unsigned char> m;
        const auto& t = bytes_to_chars();
        for (int b = 0; b < 256; ++b) m[t[b]] = static_cast<unsigned char>(b);
        return m;
      }();
      std::string bytes;
      for (const auto& t : tokens) {
        std::string mine;
        bool all = true;
        for (char32_t c : uc::decode_utf8(t)) {
          auto it = to_byte.find(c);
          if (it == to_byte.end()) {
            all = false;
            break;
          }
          mine.push_back(static_cast<char>(it->second));
        }
        bytes += all ? mine : t;
      }
      tokens = {utf8_lossy(bytes)};
    };
  if (type == "WordPiece") {
    const std::string prefix = r.opt_str(j, "prefix", at).value_or("##");
    const bool cleanup = r.flag(j, "cleanup", true, at);
    return [=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        auto& t = tokens[i];
        if (i != 0) {
          if (t.rfind(prefix, 0) == 0)
            t = t.substr(prefix.size());
          else
            t = " " + t;
        }
        if (cleanup) t = cleanup_spaces(std::move(t));
      }
    };
  }
  if (type == "Metaspace") {
    const char32_t repl = r.one_char(r.str(j, "replacement", at), at);
    std::string scheme = r.opt_str(j, "prepend_scheme", at).value_or("always");
    if (j.contains("add_prefix_space") && !r.flag(j, "add_prefix_space", true, at))
      scheme = "never";
    return [=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::u32string out;
        for (char32_t c : uc::decode_utf8(tokens[i])) {
          if (c != repl)
            out.push_back(c);
          else if (!(i == 0 && scheme != "never"))
            out.push_back(U' ');
        }
        tokens[i] = uc::encode_utf8(out);
      }
    };
  }
  if (type == "BPEDecoder") {
    const std::string suffix = r.opt_str(j, "suffix", at).value_or("</w>");
    return [=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i)
        tokens[i] = replace_str(tokens[i], suffix, i + 1 == tokens.size() ? "" : " ");
    };
  }
  if (type == "Replace") {
    Pattern p = r.pattern(j, at);
    const std::u32string content = uc::decode_utf8(r.str(j, "content", at));
    return [p, content](std::vector<std::string>& tokens) {
      for (auto& t : tokens) {
        NStr s = from_text(t, 0);
        replace_all(s, p, content);
        t = to_utf8(s);
      }
    };
  }
  if (type == "ByteFallback")
    return [](std::vector<std::string>& tokens) {
      std::vector<std::string> out;
      std::string bytes;
      size_t pending = 0;
      auto flush = [&] {
        if (!pending) return;
        if (uc::is_valid_utf8(bytes))
          out.push_back(bytes);
        else
          for (size_t k = 0; k < pending; ++k) out.push_back("\xEF\xBF\xBD");
        bytes.clear();
        pending = 0;
      };
      for (const auto& t : tokens) {
        unsigned v = 0;
        if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>' &&
            std::sscanf(t.c_str() + 3, "%2x", &v) == 1 && std::isxdigit(t[3]) &&
            std::isxdigit(t[4])) {
          bytes.push_back(static_cast<char>(v));
          ++pending;
        } else {
          flush();
          out.push_back(t);
        }
      }
      flush();
      tokens = std::move(out);
    };
  if (type == "Fuse")
    return [](std::vector<std::string>& tokens) {
      std::string all;
      for (const auto& t : tokens) all += t;
      tokens = {all};
    };
  if (type == "Strip") {
    const char32_t c = r.one_char(r.str(j, "content", at), at);
    const size_t start = static_cast<size_t>(r.integer(j, "start", at, 0, 1 << 20));
    const size_t stop = static_cast<size_t>(r.integer(j, "stop", at, 0, 1 << 20));
    return [=](std::vector<std::string>& tokens) {
      for (auto& t : tokens) {
        std::u32string u = uc::decode_utf8(t);
        size_t b = 0, e = u.size();
        while (b < start && b < e && u[b] == c) ++b;
        for (size_t k = 0; k < stop && e > b && u[e - 1] == c; ++k) --e;
        t = uc::encode_utf8(u.substr(b, e - b));
      }
    };
  }
  r.error(where, cat("decoder '", type,
                     "' is not supported (slimbert reads ByteLevel, WordPiece, Metaspace, "
                     "BPEDecoder, Replace, ByteFallback, Fuse, Strip, Sequence)"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tokenizer

struct HfTokenizer::Impl {
  std::string text;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  std::unique_ptr<Model> model;
  std::optional<Processor> processor;
  std::optional<Decoder> decoder;
  std::vector<HfAddedToken> added;
  std::vector<std::string> normalized_added;  // each added token's content, normalized
  std::unordered_map<std::string, int64_t> added_ids;
  std::vector<std::string> id_to_token;
  std::vector<bool> special;
  std::optional<HfTruncation> truncation;
  std::optional<std::pair<int64_t, std::string>> pad;
  // The added tokens matched on the raw text [0] and on the normalized text [1], by their first
  // character: (pattern, index into `added`).
  std::unordered_map<char32_t, std::vector<std::pair<std::u32string, size_t>>> added_by_first[2];

  // Leftmost-longest matches of added tokens (those with the given `normalized` flag) in `s`,
  // with single_word, lstrip and rstrip applied: [begin, end) characters and the token index.
  std::vector<std::tuple<size_t, size_t, size_t>> find_added(const NStr& s, bool normalized) const {
    std::vector<std::tuple<size_t, size_t, size_t>> out;
    const auto& index = added_by_first[normalized ? 1 : 0];
    if (index.empty()) return out;
    size_t start_offset = 0;
    size_t i = 0;
    while (i < s.size()) {
      size_t best_len = 0, best_k = 0;
      auto candidates = index.find(s[i].c);
      if (candidates == index.end()) {
        ++i;
        continue;
      }
      for (const auto& [p, k] : candidates->second) {
        if (p.size() <= best_len || i + p.size() > s.size()) continue;
        bool eq = true;
        for (size_t q = 0; q < p.size() && eq; ++q) eq = s[i + q].c == p[q];
        if (eq) {
          best_len = p.size();
          best_k = k;
        }
      }
      if (!best_len) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + best_len;
      i = stop;
      const HfAddedToken& tok = added[best_k];
      if (tok.single_word) {
        const bool start_ok = start == 0 || !uc::is_word_char(s[start - 1].c);
        const bool stop_ok = stop == s.size() || !uc::is_word_char(s[stop].c);
        if (!start_ok || !stop_ok) continue;
      }
      if (tok.lstrip) {
        size_t b = start;
        while (b > 0 && uc::is_white_space(s[b - 1].c)) --b;
        start = std::max(b, start_offset);
      }
      if (tok.rstrip)
        while (stop < s.size() && uc::is_white_space(s[stop].c)) ++stop;
      i = stop;
      out.emplace_back(start, stop, best_k);
      start_offset = stop;
    }
    return out;
  }

  struct Part {
    NStr s;
    std::optional<size_t> added;  // index into `added`
  };

  std::vector<Part> extract_and_normalize(std::string_view text) const {
    std::vector<Part> raw;
    const NStr all = from_text(text, 0);
    auto cut = [](const NStr& s, size_t b, size_t e) {
      return NStr(s.begin() + static_cast<std::ptrdiff_t>(b),
                  s.begin() + static_cast<std::ptrdiff_t>(e));
    };
    size_t prev = 0;
    for (const auto& [b, e, k] : find_added(all, false)) {
      if (b > prev) raw.push_back({cut(all, prev, b), std::nullopt});
      raw.push_back({cut(all, b, e), k});
      prev = e;
    }
    if (prev < all.size()) raw.push_back({cut(all, prev, all.size()), std::nullopt});
    std::vector<Part> out;
    for (auto& part : raw) {
      if (part.added) {
        out.push_back(std::move(part));
        continue;
      }
      if (normalizer) normalizer(part.s);
      size_t p = 0;
      for (const auto& [b, e, k] : find_added(part.s, true)) {
        if (b > p) out.push_back({cut(part.s, p, b), std::nullopt});
        out.push_back({cut(part.s, b, e), k});
        p = e;
      }
      if (p < part.s.size()) out.push_back({cut(part.s, p, part.s.size()), std::nullopt});
    }
    return out;
  }

  std::vector<NStr> pre_tokenize(const NStr& s) const {
    std::vector<NStr> words{s};
    if (pre_tokenizer) pre_tokenizer(words);
    return words;
  }

  std::vector<HfToken> encode_one(std::string_view text, int64_t type_id, int sequence) const {
    std::vector<HfToken> out;
    for (const Part& part : extract_and_normalize(text)) {
      if (part.s.empty()) continue;
      if (part.added) {
        const HfAddedToken& a = added[*part.added];
        out.push_back({a.id, to_utf8(part.s), type_id, a.special, sequence,
                       std::make_pair<size_t, size_t>(part.s.front().begin, part.s.back().end)});
        continue;
      }
      for (const NStr& word : pre_tokenize(part.s))
        for (Piece& p : model->tokenize(word)) {
          std::string token = p.value.empty() ? token_of(p.id) : std::move(p.value);
          std::optional<std::pair<size_t, size_t>> bytes;
          if (p.end > p.begin)
            bytes = std::make_pair<size_t, size_t>(word[p.begin].begin, word[p.end - 1].end);
          out.push_back({p.id, std::move(token), type_id, false, sequence, bytes});
        }
    }
    return out;
  }

  std::string token_of(int64_t id) const {
    return id >= 0 && static_cast<size_t>(id) < id_to_token.size()
               ? id_to_token[static_cast<size_t>(id)]
               : std::string();
  }
};

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const std::string& path) {
  return parse(read_file(path), path);
}

std::shared_ptr<const HfTokenizer> HfTokenizer::parse(const std::string& text,
                                                      const std::string& source) {
  const Reader r{source};
  const json j = parse_json(text, source);
  if (!j.is_object()) fail(source, ": expected a JSON object");
  auto impl = std::make_unique<Impl>();
  impl->text = text;
  if (!j.contains("model")) fail(source, ": missing field 'model'");
  impl->model = make_model(j.at("model"), r);
  if (j.contains("normalizer") && !j.at("normalizer").is_null())
    impl->normalizer = make_normalizer(j.at("normalizer"), r, "normalizer");
  if (j.contains("pre_tokenizer") && !j.at("pre_tokenizer").is_null())
    impl->pre_tokenizer = make_pre_tokenizer(j.at("pre_tokenizer"), r, "pre_tokenizer");
  if (j.contains("post_processor") && !j.at("post_processor").is_null())
    impl->processor = make_processor(j.at("post_processor"), r, "post_processor");
  if (j.contains("decoder") && !j.at("decoder").is_null())
    impl->decoder = make_decoder(j.at("decoder"), r, "decoder");

  // Ids: the model's vocabulary, then the added tokens over it.
  int64_t size = 0;
  for (const auto& [t, id] : impl->model->vocab) size = std::max(size, id + 1);
  if (j.contains("added_tokens") && !j.at("added_tokens").is_null()) {
    const json& list = j.at("added_tokens");
    if (!list.is_array()) fail(source, ": field 'added_tokens' must be a list");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string at = cat("added_tokens[", i, "]");
      const json& e = list[i];
      HfAddedToken a;
      a.id = r.integer(e, "id", at, 0, kMaxVocab - 1);
      a.content = r.str(e, "content", at);
      a.single_word = r.flag(e, "single_word", false, at);
      a.lstrip = r.flag(e, "lstrip", false, at);
      a.rstrip = r.flag(e, "rstrip", false, at);
      a.special = r.flag(e, "special", false, at);
      a.normalized = r.flag(e, "normalized", !a.special, at);
      size = std::max(size, a.id + 1);
      impl->added.push_back(std::move(a));
    }
  }
  impl->id_to_token.assign(static_cast<size_t>(size), std::string());
  impl->special.assign(static_cast<size_t>(size), false);
  for (const auto& [t, id] : impl->model->vocab) impl->id_to_token[static_cast<size_t>(id)] = t;
  for (size_t k = 0; k < impl->added.size(); ++k) {
    const HfAddedToken& a = impl->added[k];
    impl->id_to_token[static_cast<size_t>(a.id)] = a.content;
    impl->special[static_cast<size_t>(a.id)] = a.special;
    impl->added_ids[a.content] = a.id;
    NStr n = from_text(a.content, 0);
    if (a.normalized && impl->normalizer) impl->normalizer(n);
    impl->normalized_added.push_back(to_utf8(n));
    const std::u32string pattern =
        uc::decode_utf8(a.normalized ? impl->normalized_added.back() : a.content);
    if (!pattern.empty())
      impl->added_by_first[a.normalized ? 1 : 0][pattern[0]].emplace_back(pattern, k);
  }

  if (j.contains("truncation") && !j.at("truncation").is_null()) {
    const json& t = j.at("truncation");
    const std::string at = "truncation";
    HfTruncation tr{512, Truncation::kLongestFirst, TruncationSide::kRight};
    tr.max_length = r.integer(t, "max_length", at, 0, int64_t{1} << 20);
    const std::string strategy = r.opt_str(t, "strategy", at).value_or("LongestFirst");
    if (strategy == "LongestFirst")
      tr.strategy = Truncation::kLongestFirst;
    else if (strategy == "OnlyFirst")
      tr.strategy = Truncation::kOnlyFirst;
    else if (strategy == "OnlySecond")
      tr.strategy = Truncation::kOnlySecond;
    else
      r.error(at, cat("unknown strategy '", strategy,
                      "' (expected LongestFirst, OnlyFirst or OnlySecond)"));
    const std::string dir = r.opt_str(t, "direction", at).value_or("Right");
    if (dir != "Left" && dir != "Right")
      r.error(at, cat("unknown direction '", dir, "' (expected Left or Right)"));
    tr.side = dir == "Left" ? TruncationSide::kLeft : TruncationSide::kRight;
    impl->truncation = tr;
  }
  if (j.contains("padding") && !j.at("padding").is_null()) {
    const json& p = j.at("padding");
    const int64_t id = p.contains("pad_id") ? r.integer(p, "pad_id", "padding", 0, size) : 0;
    impl->pad = std::make_pair(id, r.opt_str(p, "pad_token", "padding").value_or("[PAD]"));
  }
  return std::shared_ptr<const HfTokenizer>(new HfTokenizer(std::move(impl)));
}

namespace {

void truncate_to(std::vector<HfToken>& e, size_t n, TruncationSide side) {
  if (e.size() <= n) return;
  if (side == TruncationSide::kLeft)
    e.erase(e.begin(), e.end() - static_cast<std::ptrdiff_t>(n));
  else
    e.resize(n);
}

}  // namespace

HfEncoding HfTokenizer::encode(std::string_view text, const std::optional<std::string>& pair,
                               bool add_special_tokens,
                               const std::optional<HfTruncation>& truncation) const {
  Encodings encs;
  encs.push_back(impl_->encode_one(text, 0, 0));
  if (pair) encs.push_back(impl_->encode_one(*pair, 1, 1));
  const size_t before = encs[0].size() + (pair ? encs[1].size() : 0);

  const std::optional<HfTruncation>& trunc = truncation ? truncation : impl_->truncation;
  if (trunc && trunc->strategy != Truncation::kNone) {
    int64_t max_length = trunc->max_length;
    const int64_t added = num_special_tokens(pair.has_value());
    if (add_special_tokens && added > 0) max_length -= added;
    if (max_length >= 0) {
      const auto m = static_cast<size_t>(max_length);
      size_t n1 = encs[0].size(), n2 = pair ? encs[1].size() : 0;
      if (n1 + n2 > m) {
        const size_t to_remove = n1 + n2 - m;
        if (trunc->strategy == Truncation::kLongestFirst) {
          if (pair) {
            bool swap = false;
            if (n1 > n2) {
              swap = true;
              std::swap(n1, n2);
            }
            n2 = n1 > m ? n1 : std::max(n1, m - n1);
            if (n1 + n2 > m) {
              n1 = m / 2;
              n2 = n1 + m % 2;
            }
            if (swap) std::swap(n1, n2);
            truncate_to(encs[0], n1, trunc->side);
            truncate_to(encs[1], n2, trunc->side);
          } else {
            truncate_to(encs[0], m, trunc->side);
          }
        } else {
          const bool first = trunc->strategy == Truncation::kOnlyFirst;
          if (!first && !pair) fail("truncation only_second needs a text pair");
          auto& target = encs[first ? 0 : 1];
          if (target.size() <= to_remove)
            fail("cannot truncate to max_length ", trunc->max_length, " with only_",
                 first ? "first" : "second", ": the ", first ? "first" : "second", " sequence has ",
                 target.size(), " tokens and ", to_remove, " must be removed");
          truncate_to(target, target.size() - to_remove, trunc->side);
        }
      }
    }
  }

  HfEncoding out;
  out.num_truncated = static_cast<int64_t>(before) -
                      static_cast<int64_t>(encs[0].size() + (pair ? encs[1].size() : 0));
  std::vector<std::string_view> texts{text};
  if (pair) texts.emplace_back(*pair);
  if (impl_->processor) impl_->processor->process(encs, add_special_tokens, texts);
  for (auto& e : encs)
    for (auto& t : e) out.tokens.push_back(std::move(t));
  return out;
}

std::vector<HfWord> HfTokenizer::words(std::string_view text) const {
  std::vector<HfWord> out;
  for (const auto& part : impl_->extract_and_normalize(text)) {
    if (part.s.empty()) continue;
    if (part.added) {
      out.push_back({impl_->added[*part.added].content, {impl_->added[*part.added].content}});
      continue;
    }
    for (const NStr& word : impl_->pre_tokenize(part.s)) {
      HfWord w{to_utf8(word), {}};
      for (const Piece& p : impl_->model->tokenize(word))
        w.pieces.push_back(p.value.empty() ? impl_->token_of(p.id) : p.value);
      out.push_back(std::move(w));
    }
  }
  return out;
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) continue;
    if (impl_->id_to_token[static_cast<size_t>(id)].empty()) continue;
    if (skip_special_tokens && impl_->special[static_cast<size_t>(id)]) continue;
    tokens.push_back(impl_->id_to_token[static_cast<size_t>(id)]);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  (*impl_->decoder)(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

const std::vector<std::string>& HfTokenizer::vocab() const {
  return impl_->id_to_token;
}

std::optional<int64_t> HfTokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->added_ids.find(token);
  if (it != impl_->added_ids.end()) return it->second;
  return impl_->model->find(token);
}

const std::vector<HfAddedToken>& HfTokenizer::added_tokens() const {
  return impl_->added;
}

bool HfTokenizer::is_special(int64_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() &&
         impl_->special[static_cast<size_t>(id)];
}

int64_t HfTokenizer::num_special_tokens(bool pair) const {
  return impl_->processor ? impl_->processor->added(pair) : 0;
}

std::optional<std::string> HfTokenizer::cls_token() const {
  return impl_->processor ? impl_->processor->cls : std::nullopt;
}
std::optional<std::string> HfTokenizer::sep_token() const {
  return impl_->processor ? impl_->processor->sep : std::nullopt;
}
std::optional<std::string> HfTokenizer::unk_token() const {
  return impl_->model->unk;
}
const std::optional<HfTruncation>& HfTokenizer::truncation() const {
  return impl_->truncation;
}
std::optional<std::pair<int64_t, std::string>> HfTokenizer::pad() const {
  return impl_->pad;
}
std::string HfTokenizer::model_type() const {
  return impl_->model->type;
}
const std::string& HfTokenizer::json_text() const {
  return impl_->text;
}

}  // namespace slimbert
