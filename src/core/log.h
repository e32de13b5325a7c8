// Leveled logging to stderr: "[level] message". One global threshold (mind4::log::set_level),
// initialised from the environment variable MIND4_LOG_LEVEL (debug|info|warning|error) when set,
// else info. The MIND4_LOG_* macros test the threshold before building the message, so a disabled
// debug line costs one relaxed atomic load and no formatting.
#pragma once

#include <string_view>

#include "mind4/config.h"
#include "mind4/status.h"

namespace mind4::log {

void set_level(LogLevel level);
LogLevel level();
bool enabled(LogLevel level);

// "debug", "info", "warning", "error".
const char* level_name(LogLevel level);
// Parses a level name (as above; also "warn"). Throws Error(kInvalidArgument) naming the text.
LogLevel parse_level(std::string_view name);

// Writes "[level] message\n" to stderr as one write, so concurrent lines do not interleave.
// Clears a progress bar line first when one is being drawn on the terminal (it redraws itself).
void write(LogLevel level, std::string_view message);

namespace detail {
// Progress bars drawing on a terminal register here so that log lines can clear their line.
void terminal_bar_started();
void terminal_bar_finished();
}  // namespace detail

}  // namespace mind4::log

#define MIND4_LOG(level, ...)                                          \
  do {                                                                 \
    if (::mind4::log::enabled(level))                                  \
      ::mind4::log::write((level), ::mind4::detail::cat(__VA_ARGS__)); \
  } while (0)
#define MIND4_LOG_DEBUG(...) MIND4_LOG(::mind4::LogLevel::kDebug, __VA_ARGS__)
#define MIND4_LOG_INFO(...) MIND4_LOG(::mind4::LogLevel::kInfo, __VA_ARGS__)
#define MIND4_LOG_WARNING(...) MIND4_LOG(::mind4::LogLevel::kWarning, __VA_ARGS__)
#define MIND4_LOG_ERROR(...) MIND4_LOG(::mind4::LogLevel::kError, __VA_ARGS__)
