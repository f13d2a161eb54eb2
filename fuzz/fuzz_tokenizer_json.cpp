// tokenizer.json: the file from the input (any component, pattern, charsmap, template), then a
// text and a pair to encode, truncate and decode. Layout: 2 option bytes, the JSON, NUL, text,
// NUL, pair.
#include "fuzz_util.h"
#include "slimbert/text/tokenizer_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t flags = fuzz::take_byte(in);
  const uint8_t length = fuzz::take_byte(in);
  const std::string json(fuzz::take_until(in, '\0'));
  const std::string text(fuzz::take_until(in, '\0'));
  const std::string pair(in);
  fuzz::expect_clean([&] {
    const auto hf = HfTokenizer::parse(json, "fuzz.json");
    std::optional<HfTruncation> trunc;
    if (flags & 1)
      trunc = HfTruncation{length % 80,
                           (flags & 2)   ? Truncation::kOnlyFirst
                           : (flags & 4) ? Truncation::kOnlySecond
                                         : Truncation::kLongestFirst,
                           (flags & 8) ? TruncationSide::kLeft : TruncationSide::kRight};
    const HfEncoding enc =
        hf->encode(text, (flags & 16) ? std::optional(pair) : std::nullopt, flags & 32, trunc);
    std::vector<int64_t> ids;
    for (const auto& t : enc.tokens) {
      ids.push_back(t.id);
      if (t.bytes && (t.bytes->first > t.bytes->second ||
                      t.bytes->second > (t.sequence ? pair.size() : text.size())))
        std::abort();  // an offset outside its text
    }
    hf->decode(ids, flags & 64);
    hf->words(text);
  });
  return 0;
}
