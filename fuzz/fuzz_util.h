// What every fuzz target shares: inputs that are files go through a private directory in memory,
// and the rule that decides what is a finding. A slimbert::Error is the right answer to bad
// input; any other exception (a library's own, std::bad_alloc, std::length_error) is a defect,
// as are the crashes and undefined behaviour the sanitizers catch.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"

namespace slimbert::fuzz {

// A directory of this process, in /dev/shm where there is one (a write per execution).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = std::string(base) + "/slimbert-fuzz-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    return tmpl;
  }();
  return dir;
}

// Runs `body`; input errors are expected, anything else aborts (a finding).
template <typename Body>
void expect_clean(Body&& body) {
  try {
    body();
  } catch (const slimbert::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: exception other than slimbert::Error: %s\n", e.what());
    std::abort();
  }
}

// Consumes the first byte of `data` (0 when empty).
inline uint8_t take_byte(std::string_view& data) {
  if (data.empty()) return 0;
  const uint8_t b = static_cast<uint8_t>(data[0]);
  data.remove_prefix(1);
  return b;
}

// The part of `data` before the next `sep` (all of it when there is none), consumed.
inline std::string_view take_until(std::string_view& data, char sep) {
  const size_t at = data.find(sep);
  std::string_view part = data.substr(0, at);
  data.remove_prefix(at == std::string_view::npos ? data.size() : at + 1);
  return part;
}

}  // namespace slimbert::fuzz
