// The server's request bodies as clients send them, to every endpoint: a RequestError with a
// 4xx status is the right answer to bad input; what parses obeys the limits it was given.
#include "fuzz_util.h"
#include "slimbert/serve/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  using serve::Endpoint;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const serve::RequestLimits limits{8, 256};
  for (Endpoint e : serve::all_endpoints()) {
    try {
      const serve::Request r = serve::parse_request(e, body, limits);
      if (e == Endpoint::kDecode) {
        if (r.ids.empty() || r.ids.size() > limits.max_inputs) std::abort();
        continue;
      }
      // Similarity's source sentence counts among the inputs too.
      if (r.inputs.empty() || r.inputs.size() > limits.max_inputs) std::abort();
      for (const auto& in : r.inputs)
        if (in.text.size() > limits.max_text_bytes ||
            (in.pair && in.pair->size() > limits.max_text_bytes))
          std::abort();
      if (r.latency_budget_ms && (r.width || r.depth)) std::abort();
      if (r.ignored.size() > 8) std::abort();
      for (const auto& name : r.ignored)
        for (char c : name)
          if (c < 0x20 || c > 0x7e) std::abort();  // it goes into a response header
      for (const auto& m : {r.width, r.depth})
        if (m && !(*m > 0.0 && *m <= 1.0)) std::abort();
    } catch (const serve::RequestError& err) {
      if (err.status() != 400 && err.status() != 413 && err.status() != 422) std::abort();
      if ((err.status() == 400) != (err.type() == serve::ErrorType::kEmpty)) std::abort();
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "finding: %s\n", ex.what());
      std::abort();
    }
  }
  return 0;
}
