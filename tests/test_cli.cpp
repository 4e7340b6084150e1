// The binary's contract with its users: --help lists every flag with its default, bad input is
// one line on stderr naming the problem, and the exit code is non-zero.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {
struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

CliRun run(const std::string& args) {
  const std::string command = std::string(OWLORE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

const std::string kData = std::string(OWLORE_SOURCE_DIR) + "/data/tinyshakespeare/input.txt";
}  // namespace

TEST(Cli, HelpListsEveryTrainFlagWithItsDefault) {
  const CliRun r = run("train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--preset", "--model", "--data", "--device TEXT=cpu", "--method TEXT=full", "--steps INT=200",
                           "--batch", "--seq", "--grad-accum", "--lr", "--warmup", "--clip", "--val-every", "--seed"})
    EXPECT_NE(r.output.find(flag), std::string::npos) << "train --help lacks " << flag << "\n" << r.output;
}

TEST(Cli, BadInputIsOneLineAndNonZero) {
  struct Case {
    std::string args, expected;
  } cases[] = {
      {"train --preset tiny --data /missing.txt", "/missing.txt: cannot open data file"},
      {"train --preset nope --data " + kData, "unknown preset 'nope'"},
      {"train --preset tiny --method sgd --data " + kData, "unknown method 'sgd'"},
      {"train --preset tiny --seq 4096 --data " + kData, "--seq 4096 does not fit"},
      {"train --preset tiny --steps many --data " + kData, "--steps"},
      {"train --preset tiny --batch 1.5 --data " + kData, "--batch"},
      {"train --preset tiny", "--data is required"},
      {"frobnicate", "frobnicate"},
  };
  for (const Case& c : cases) {
    const CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
  }
}
