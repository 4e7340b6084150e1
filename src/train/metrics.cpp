#include "train/metrics.h"

#include <unistd.h>

#include "base/error.h"

namespace owlore {

MetricsLog::MetricsLog(const std::string& path, bool append)
    : path_(path), file_(path, append ? std::ios::app : std::ios::trunc) {
  OWLORE_REQUIRE(file_.good(), path, ": cannot open metrics file for writing");
}

void MetricsLog::write(const nlohmann::json& record) {
  file_ << record.dump() << '\n';
  file_.flush();
  OWLORE_REQUIRE(file_.good(), path_, ": write failed (disk full?)");
}

Progress::Progress(int first_step_done, int total_steps, int log_every)
    : first_step_done_(first_step_done),
      total_steps_(total_steps), log_every_(log_every < 1 ? 1 : log_every), terminal_(isatty(fileno(stdout))) {}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "--:--";
  const long s = (long)(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

void Progress::step(int step, double loss, double lr, double tokens_per_s, double elapsed_s) {
  const bool due = terminal_ || step % log_every_ == 0 || step == total_steps_ || step == 1;
  if (!due) return;
  const int done_here = step - first_step_done_;
  const double eta = done_here > 0 ? elapsed_s / done_here * (total_steps_ - step) : -1;
  char text[256];
  std::snprintf(text, sizeof text, "step %*d/%d | loss %.4f | lr %.3e | %.0f tok/s | elapsed %s | ETA %s",
                (int)std::to_string(total_steps_).size(), step, total_steps_, loss, lr, tokens_per_s,
                format_duration(elapsed_s).c_str(), format_duration(eta).c_str());
  if (terminal_) {
    std::printf("\r\033[K%s", text);
    dirty_ = true;
  } else {
    std::printf("%s\n", text);
  }
  std::fflush(stdout);
}

void Progress::line(const std::string& text) {
  if (dirty_) std::printf("\r\033[K");
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
  dirty_ = false;
}

void Progress::finish() {
  if (dirty_) std::printf("\n");
  dirty_ = false;
  std::fflush(stdout);
}

}  // namespace owlore
