#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace mind4::log {
namespace {

LogLevel initial_level() {
  const char* env = std::getenv("MIND4_LOG_LEVEL");
  if (env == nullptr || *env == '\0') return LogLevel::kInfo;
  try {
    return parse_level(env);
  } catch (const Error&) {
    std::fprintf(stderr,
                 "[warning] MIND4_LOG_LEVEL=%s is not one of debug|info|warning|error; "
                 "using info\n",
                 env);
    return LogLevel::kInfo;
  }
}

std::atomic<int>& threshold() {
  static std::atomic<int> value{static_cast<int>(initial_level())};
  return value;
}

std::atomic<int> g_terminal_bars{0};
std::mutex g_write_mutex;

}  // namespace

void set_level(LogLevel level) {
  threshold().store(static_cast<int>(level), std::memory_order_relaxed);
}

LogLevel level() {
  return static_cast<LogLevel>(threshold().load(std::memory_order_relaxed));
}

bool enabled(LogLevel level) {
  return static_cast<int>(level) >= threshold().load(std::memory_order_relaxed);
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

LogLevel parse_level(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning" || name == "warn") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  throw Error(Status::kInvalidArgument,
              "unknown log level '" + std::string(name) + "' (expected debug|info|warning|error)");
}

void write(LogLevel level, std::string_view message) {
  std::string line;
  line.reserve(message.size() + 16);
  // A progress bar owns the terminal's current line; erase it so the log line starts clean.
  if (g_terminal_bars.load(std::memory_order_relaxed) > 0) line += "\r\033[K";
  line += '[';
  line += level_name(level);
  line += "] ";
  line += message;
  line += '\n';
  std::lock_guard<std::mutex> lock(g_write_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

namespace detail {
void terminal_bar_started() {
  g_terminal_bars.fetch_add(1, std::memory_order_relaxed);
}
void terminal_bar_finished() {
  g_terminal_bars.fetch_sub(1, std::memory_order_relaxed);
}
}  // namespace detail

}  // namespace mind4::log
