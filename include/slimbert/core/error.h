// One error type family for slimbert. Messages carry the offending names and values;
// only the command-line front end turns them into exit codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace slimbert {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Invalid user input (bad flags, bad files): reported without a stack of context.
class InputError : public Error {
 public:
  using Error::Error;
};

// Builds a message from streamable parts: fail("x: expected ", a, ", got ", b).
template <typename... Parts>
std::string cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw InputError(cat(std::forward<Parts>(parts)...));
}

}  // namespace slimbert
