// Code-point level helpers over utf8proc, with the exact predicates HF BertTokenizer uses.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slimbert::unicode {

// Decodes UTF-8; each invalid or truncated sequence becomes one U+FFFD (never throws).
std::u32string decode_utf8(std::string_view text);
std::string encode_utf8(std::u32string_view text);
bool is_valid_utf8(std::string_view text);
void append_utf8(std::string& out, char32_t cp);

// Unicode normal forms via utf8proc.
std::u32string nfc(std::u32string_view text);
std::u32string nfd(std::u32string_view text);
std::u32string nfkc(std::u32string_view text);
std::u32string nfkd(std::u32string_view text);

// Python's str.lower() for one code point (full case mapping: U+0130 becomes two code points).
void append_lower(std::u32string& out, char32_t cp);

bool is_python_space(char32_t cp);      // Python str.isspace()
bool is_bert_whitespace(char32_t cp);   // " \t\n\r" or category Zs
bool is_bert_control(char32_t cp);      // category C* except "\t\n\r"
bool is_bert_punctuation(char32_t cp);  // ASCII 33-47, 58-64, 91-96, 123-126, or category P*
bool is_cjk(char32_t cp);               // CJK unified ideograph blocks BERT isolates
bool is_nonspacing_mark(char32_t cp);   // category Mn
bool is_letter(char32_t cp);            // category L*

// The predicates of Rust's char and regex crates, which HF's tokenizers library uses.
bool is_white_space(char32_t cp);  // Unicode White_Space (Rust char::is_whitespace, regex \s)
bool is_other(char32_t cp);        // category C*
bool is_mark(char32_t cp);         // category M*
bool is_numeric(char32_t cp);      // Nd, Nl or No (Rust char::is_numeric)
bool is_punctuation(char32_t cp);  // category P*
bool is_word_char(char32_t cp);    // regex \w: alphabetic, marks, Nd, Pc, joiners
// Extended grapheme clusters of `text`, as [begin, end) code point ranges.
std::vector<std::pair<size_t, size_t>> graphemes(std::u32string_view text);

}  // namespace slimbert::unicode
