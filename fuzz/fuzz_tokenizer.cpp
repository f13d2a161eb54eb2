// The tokenizer on a vocabulary and texts from the input, with every option: lower-casing,
// accents, CJK, truncation strategy, padding, any max_length (odd, tiny, negative, huge), pairs,
// batches and decoding. Layout: 4 option bytes, then vocabulary lines, text and pair separated
// by NUL bytes.
#include "fuzz_util.h"
#include "slimbert/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t flags = fuzz::take_byte(in);
  const uint8_t length_byte = fuzz::take_byte(in);
  const uint8_t truncation_byte = fuzz::take_byte(in);
  const uint8_t padding_byte = fuzz::take_byte(in);
  const std::string_view vocab_text = fuzz::take_until(in, '\0');
  const std::string text(fuzz::take_until(in, '\0'));
  const std::string pair(in);
  fuzz::expect_clean([&] {
    std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (const std::string& line : split_lines(vocab_text, false)) tokens.push_back(line);
    TokenizerOptions o;
    o.do_lower_case = flags & 1;
    if (flags & 2) o.strip_accents = (flags & 4) != 0;
    o.tokenize_chinese_chars = flags & 8;
    o.max_input_chars_per_word = (flags & 16) ? 5 : 100;
    const Tokenizer t(Vocab::from_tokens(tokens), o);
    EncodeOptions e;
    // Small lengths mostly, odd ones included; sometimes negative or huge.
    if (length_byte != 0) e.max_length = static_cast<int8_t>(length_byte);
    if (length_byte == 0x7f) e.max_length = int64_t{1} << 40;
    static const Truncation kTruncations[] = {Truncation::kNone, Truncation::kLongestFirst,
                                              Truncation::kOnlyFirst, Truncation::kOnlySecond};
    static const Padding kPaddings[] = {Padding::kNone, Padding::kLongest, Padding::kMaxLength};
    e.truncation = kTruncations[truncation_byte % 4];
    e.padding = kPaddings[padding_byte % 3];
    e.add_special_tokens = (padding_byte & 4) == 0;
    const bool with_pair = flags & 32;
    const Encoding enc =
        t.encode(text, with_pair ? std::optional<std::string>(pair) : std::nullopt, e);
    if (enc.input_ids.size() != enc.tokens.size() ||
        enc.input_ids.size() != enc.attention_mask.size() ||
        enc.input_ids.size() != enc.token_type_ids.size())
      std::abort();
    for (int64_t id : enc.input_ids)
      if (id < 0 || id >= t.vocab().size()) std::abort();
    (void)t.decode(enc.input_ids, flags & 64);
    const auto batch = t.encode_batch({text, pair}, {}, e);
    if (batch.size() != 2) std::abort();
    // Padding to the longest makes one length; padding to max_length never truncates (as in HF).
    if (e.padding == Padding::kLongest && batch[0].input_ids.size() != batch[1].input_ids.size())
      std::abort();
    if (e.padding == Padding::kMaxLength)
      for (const Encoding& b : batch)
        if (static_cast<int64_t>(b.input_ids.size()) < *e.max_length) std::abort();
    size_t pieces = 0;
    for (const Word& w : t.words(text)) pieces += w.pieces.size();
    if (pieces != t.tokenize(text).size()) std::abort();
  });
  return 0;
}
