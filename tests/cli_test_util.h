// Running the owlore binary from a test: its exit code and its stdout+stderr together. Tests
// that include this get OWLORE_BINARY from tests/CMakeLists.txt.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace owlore::test {

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// timeout_s > 0 runs the binary under timeout(1): a hang then ends with exit code 124.
inline CliRun run_owlore(const std::string& args, int timeout_s = 0) {
  const std::string prefix = timeout_s > 0 ? "timeout -s KILL " + std::to_string(timeout_s) + " " : "";
  const std::string command = prefix + std::string(OWLORE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace owlore::test
