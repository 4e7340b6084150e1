// Running a piece of a test in a child process, for inputs that once hung or allocated without
// bound: a regression then fails the test (as "timed out" or std::bad_alloc under the
// address-space limit) instead of stalling the suite or waking the OOM killer.
#pragma once
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <string>

#include "base/error.h"

namespace owlore::test {

// What f() did in a child process: "error: <message>" for an owlore::Error, "ok" for a return,
// "exception: <what>" for any other exception (std::bad_alloc once the address-space limit is
// reached), "timed out" when it had not finished after timeout_s (then it is killed).
inline std::string outcome_in_child(const std::function<void()>& f, int timeout_s = 5,
                                    uint64_t address_space = 2ull << 30) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const rlimit limit{address_space, address_space};
    setrlimit(RLIMIT_AS, &limit);
    std::string result;
    try {
      f();
      result = "ok";
    } catch (const Error& e) {
      result = std::string("error: ") + e.what();
    } catch (const std::exception& e) {
      result = std::string("exception: ") + e.what();
    }
    ssize_t ignored = write(fds[1], result.data(), result.size());
    (void)ignored;
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool done = false;
  while (!done) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fds[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, (int)left.count()) == 0) break;
    char buffer[4096];
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n > 0) out.append(buffer, (size_t)n);
    else done = n == 0;
  }
  close(fds[0]);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return "timed out";
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "child died by signal " + std::to_string(WTERMSIG(status));
  return out;
}

// Expects f(), run by outcome_in_child, to throw an owlore::Error containing every one of parts;
// `what` names the case in failure messages.
inline void expect_refused_in_child(const std::function<void()>& f, std::initializer_list<std::string> parts,
                                    const std::string& what) {
  const std::string outcome = outcome_in_child(f);
  ASSERT_EQ(outcome.rfind("error: ", 0), 0u) << what << ": expected an owlore::Error, got: " << outcome;
  for (const std::string& part : parts)
    EXPECT_NE(outcome.find(part), std::string::npos) << what << ": message lacks '" << part << "': " << outcome;
}

}  // namespace owlore::test
