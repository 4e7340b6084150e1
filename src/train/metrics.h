// What a run reports: one JSON object per line in <out>/metrics.jsonl (for tools and plots),
// and for people a progress line that rewrites itself on a terminal or plain lines elsewhere.
// The two never mix: JSON goes only to the file.
#pragma once
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace owlore {

class MetricsLog {
 public:
  // Truncates <path> unless append (a resumed run appends).
  MetricsLog(const std::string& path, bool append);
  void write(const nlohmann::json& record);  // one line, flushed: a crash loses nothing written

 private:
  std::string path_;
  std::ofstream file_;
};

class Progress {
 public:
  // first_step_done: the step a resumed run starts after (0 for a fresh run), so the ETA counts
  // only the steps this process runs.
  Progress(int first_step_done, int total_steps, int log_every);
  // Called once per step; prints when due (every step on a terminal, every log_every otherwise).
  void step(int step, double loss, double lr, double tokens_per_s, double elapsed_s);
  // A line that must not be overwritten (validation, notices).
  void line(const std::string& text);
  void finish();

 private:
  int first_step_done_, total_steps_, log_every_;
  bool terminal_;
  bool dirty_ = false;  // a \r progress line is on screen
};

std::string format_duration(double seconds);

}  // namespace owlore
