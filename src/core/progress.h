// A progress bar for long loops (loading weights, tokenizing a corpus, training steps, evals).
//
//   ProgressBar bar("load", total_bytes, "B");
//   for (...) bar.add(chunk);          // any thread; cheap enough to call per item
//   bar.finish();                       // also done by the destructor
//
// On a terminal (isatty(stderr)) it redraws one line at most ~10 times a second:
//   label  45% |#########           | 450/1000 it [00:05<00:06, 90.0 it/s]
// Elsewhere (CI logs, pipes) it writes a plain line at most every ~5 s and one at finish, with no
// carriage returns. total = 0 means unknown: no percent, bar or ETA. unit "B" prints SI byte sizes
// (kB, MB, GB: powers of 1000). MIND4_NO_PROGRESS=1 in the environment silences every bar.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace mind4 {

// Knobs for tests and special front ends; the defaults are what the API above describes.
struct ProgressOptions {
  std::FILE* stream = stderr;
  int terminal = -1;       // -1: isatty(stream); 0: plain lines; 1: redraw one line
  bool honour_env = true;  // obey MIND4_NO_PROGRESS
  double terminal_interval_s = 0.1;
  double plain_interval_s = 5.0;
  int width = 0;  // columns; 0: ask the terminal (80 when it will not say)
};

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total, std::string unit = "it");
  ProgressBar(std::string label, uint64_t total, std::string unit, ProgressOptions options);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Sets the absolute amount done.
  void update(uint64_t done);
  // Adds n to the amount done (thread-safe).
  void add(uint64_t n);
  // Draws the final state and ends the line. Idempotent.
  void finish();

  uint64_t done() const { return done_.load(std::memory_order_relaxed); }

 private:
  void maybe_draw(uint64_t done);
  void draw(uint64_t done, double elapsed_s, bool final);
  std::string render(uint64_t done, double elapsed_s, bool final) const;
  static int64_t now_ns();

  const std::string label_;
  const uint64_t total_;
  const std::string unit_;
  ProgressOptions options_;
  bool enabled_ = true;
  bool terminal_ = false;
  int width_ = 80;
  const int64_t start_ns_;
  int64_t interval_ns_;

  std::atomic<uint64_t> done_{0};
  // Cheap gate: the clock is read only once done reaches this count (re-armed to ~10 ms of work).
  std::atomic<uint64_t> next_check_done_{0};
  std::atomic<int64_t> next_draw_ns_{0};
  std::atomic<bool> finished_{false};
  std::mutex draw_mutex_;
};

// Formatting used by the bar, exposed for tests and other reports.
namespace progress_format {
std::string si(double value);                                  // 1234567 -> "1.23M"
std::string amount(uint64_t value, const std::string& unit);   // "1.23 MB" or "450"
std::string rate(double per_second, const std::string& unit);  // "1.23 MB/s", "90.0 it/s"
std::string duration(double seconds);                          // "01:05", "1:02:03"
}  // namespace progress_format

}  // namespace mind4
