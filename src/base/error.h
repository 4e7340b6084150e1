// One exception type for every user-facing failure, and the check macros that raise it.
// main() prints what() on one line and exits non-zero; messages name the file, tensor or flag
// and say what was expected.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace owlore {

struct Error : std::runtime_error {
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds a message from streamable parts: fail("tensor ", name, ": expected ", n, " bytes").
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}

// A run stopped by a signal after saving its state: main exits with 128 + signal, the shell's
// convention for a process ended by that signal.
struct Interrupted : Error {
  Interrupted(int signal_number, const std::string& message) : Error(message), signal(signal_number) {}
  int signal;
};

}  // namespace owlore

// Checks an invariant the user can violate (bad input); the message says what was expected.
#define OWLORE_REQUIRE(cond, ...)                 \
  do {                                            \
    if (!(cond)) ::owlore::fail(__VA_ARGS__);     \
  } while (0)
