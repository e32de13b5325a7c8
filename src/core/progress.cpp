#include "core/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace mind4 {

namespace progress_format {

std::string si(double value) {
  static const char* const kPrefixes[] = {"", "k", "M", "G", "T", "P", "E"};
  int p = 0;
  while (std::fabs(value) >= 999.5 && p < 6) {
    value /= 1000.0;
    ++p;
  }
  char buf[32];
  // Three significant digits, like "1.23M", "12.3k", "123".
  if (p == 0 && value == std::floor(value)) {
    std::snprintf(buf, sizeof buf, "%.0f", value);
  } else if (std::fabs(value) < 9.995) {
    std::snprintf(buf, sizeof buf, "%.2f%s", value, kPrefixes[p]);
  } else if (std::fabs(value) < 99.95) {
    std::snprintf(buf, sizeof buf, "%.1f%s", value, kPrefixes[p]);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f%s", value, kPrefixes[p]);
  }
  return buf;
}

std::string amount(uint64_t value, const std::string& unit) {
  if (unit == "B") {
    std::string s = si(static_cast<double>(value));
    // "1.23M" -> "1.23 MB"; "512" -> "512 B".
    if (!s.empty() && std::isalpha(static_cast<unsigned char>(s.back()))) {
      char prefix = s.back();
      s.pop_back();
      return s + " " + prefix + "B";
    }
    return s + " B";
  }
  return std::to_string(value);
}

std::string rate(double per_second, const std::string& unit) {
  if (!std::isfinite(per_second) || per_second < 0) return "? " + unit + "/s";
  if (unit == "B") {
    std::string s = si(per_second);
    if (!s.empty() && std::isalpha(static_cast<unsigned char>(s.back()))) {
      char prefix = s.back();
      s.pop_back();
      return s + " " + prefix + "B/s";
    }
    return s + " B/s";
  }
  char buf[32];
  if (per_second < 1000.0) {
    std::snprintf(buf, sizeof buf, per_second < 9.995 ? "%.2f" : "%.1f", per_second);
    return std::string(buf) + " " + unit + "/s";
  }
  return si(per_second) + " " + unit + "/s";
}

std::string duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto total = static_cast<uint64_t>(seconds + 0.5);
  uint64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  char buf[48];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(h),
                  static_cast<unsigned long long>(m), static_cast<unsigned long long>(s));
  } else {
    std::snprintf(buf, sizeof buf, "%02llu:%02llu", static_cast<unsigned long long>(m),
                  static_cast<unsigned long long>(s));
  }
  return buf;
}

}  // namespace progress_format

namespace {

bool progress_disabled_by_env() {
  const char* env = std::getenv("MIND4_NO_PROGRESS");
  return env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0;
}

int terminal_columns(std::FILE* stream) {
  winsize ws{};
  if (ioctl(fileno(stream), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

int64_t ProgressBar::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ProgressBar::ProgressBar(std::string label, uint64_t total, std::string unit)
    : ProgressBar(std::move(label), total, std::move(unit), ProgressOptions{}) {}

ProgressBar::ProgressBar(std::string label, uint64_t total, std::string unit,
                         ProgressOptions options)
    : label_(std::move(label)),
      total_(total),
      unit_(unit.empty() ? std::string("it") : std::move(unit)),
      options_(options),
      start_ns_(now_ns()) {
  if (options_.stream == nullptr) options_.stream = stderr;
  enabled_ = !(options_.honour_env && progress_disabled_by_env());
  terminal_ = options_.terminal < 0 ? isatty(fileno(options_.stream)) != 0 : options_.terminal == 1;
  width_ =
      options_.width > 0 ? options_.width : (terminal_ ? terminal_columns(options_.stream) : 80);
  double interval = terminal_ ? options_.terminal_interval_s : options_.plain_interval_s;
  interval_ns_ = static_cast<int64_t>(std::max(0.0, interval) * 1e9);
  if (!enabled_) return;
  if (terminal_) {
    log::detail::terminal_bar_started();
    // Show the label at once so that a slow first item is not a blank screen.
    next_draw_ns_.store(start_ns_ + interval_ns_, std::memory_order_relaxed);
    draw(0, 0.0, false);
  } else {
    // Plain output: a short task prints only its finish line.
    next_draw_ns_.store(start_ns_ + interval_ns_, std::memory_order_relaxed);
  }
}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::update(uint64_t done) {
  uint64_t previous = done_.exchange(done, std::memory_order_relaxed);
  // Going backwards (a restarted phase) re-arms the counter gate.
  if (done < previous) next_check_done_.store(0, std::memory_order_relaxed);
  if (done >= next_check_done_.load(std::memory_order_relaxed)) maybe_draw(done);
}

void ProgressBar::add(uint64_t n) {
  uint64_t done = done_.fetch_add(n, std::memory_order_relaxed) + n;
  if (done >= next_check_done_.load(std::memory_order_relaxed)) maybe_draw(done);
}

void ProgressBar::maybe_draw(uint64_t done) {
  if (!enabled_ || finished_.load(std::memory_order_relaxed)) return;
  int64_t now = now_ns();
  double elapsed = static_cast<double>(now - start_ns_) * 1e-9;
  // Re-arm the counter gate so that the clock is read again after about 10 ms worth of items.
  double per_ns =
      elapsed > 0 ? static_cast<double>(done) / static_cast<double>(now - start_ns_) : 0;
  auto step = static_cast<uint64_t>(per_ns * 1e7);
  next_check_done_.store(done + std::max<uint64_t>(step, 1), std::memory_order_relaxed);
  int64_t due = next_draw_ns_.load(std::memory_order_relaxed);
  if (now < due) return;
  // One thread wins the right to draw this interval; the others return at once.
  if (!next_draw_ns_.compare_exchange_strong(due, now + interval_ns_, std::memory_order_relaxed))
    return;
  std::unique_lock<std::mutex> lock(draw_mutex_, std::try_to_lock);
  if (!lock.owns_lock() || finished_.load(std::memory_order_relaxed)) return;
  draw(done, elapsed, false);
}

void ProgressBar::finish() {
  if (finished_.exchange(true)) return;
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(draw_mutex_);
  double elapsed = static_cast<double>(now_ns() - start_ns_) * 1e-9;
  draw(done_.load(std::memory_order_relaxed), elapsed, true);
  if (terminal_) log::detail::terminal_bar_finished();
}

void ProgressBar::draw(uint64_t done, double elapsed_s, bool final) {
  std::string line = render(done, elapsed_s, final);
  if (terminal_) {
    // \r + erase-to-end-of-line redraws in place; the final state keeps its line.
    line = "\r" + line + "\033[K";
    if (final) line += '\n';
  } else {
    line += '\n';
  }
  std::fwrite(line.data(), 1, line.size(), options_.stream);
  std::fflush(options_.stream);
}

std::string ProgressBar::render(uint64_t done, double elapsed_s, bool final) const {
  namespace pf = progress_format;
  double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0.0;
  bool known = total_ > 0;
  double fraction =
      known ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total_)) : 0;
  std::string amounts = pf::amount(done, unit_);
  // Appends rather than "literal" + string: GCC 12 warns falsely (-Wrestrict) on the latter.
  if (known) amounts.append("/").append(pf::amount(total_, unit_));
  if (unit_ != "B") amounts.append(" ").append(unit_);
  double eta = (known && rate > 0 && done < total_) ? static_cast<double>(total_ - done) / rate
                                                    : (known && done >= total_ ? 0.0 : -1.0);
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100.0));

  if (!terminal_) {
    if (final) {
      return label_ + ": done, " + amounts + " in " + pf::duration(elapsed_s) + " (" +
             pf::rate(rate, unit_) + ")";
    }
    std::string s = label_ + ": ";
    if (known) s += std::string(pct) + " ";
    s.append(amounts).append(", ").append(pf::duration(elapsed_s)).append(" elapsed");
    if (known) s.append(", ETA ").append(pf::duration(eta));
    return s.append(", ").append(pf::rate(rate, unit_));
  }

  std::string stats = amounts + " [" + pf::duration(elapsed_s);
  if (known) stats.append("<").append(pf::duration(eta));
  stats.append(", ").append(pf::rate(rate, unit_)).append("]");
  if (!known) return label_ + " " + stats;
  std::string head = label_ + " " + pct + " |";
  int bar = width_ - 1 - static_cast<int>(head.size() + 2 + stats.size());
  bar = std::clamp(bar, 0, 40);
  if (bar < 5) return head.substr(0, head.size() - 2) + " " + stats;
  int filled = static_cast<int>(fraction * bar);
  return head + std::string(filled, '#') + std::string(bar - filled, ' ') + "| " + stats;
}

}  // namespace mind4
