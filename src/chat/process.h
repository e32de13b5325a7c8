// Runs a command as a child process with its input on stdin, a wall-clock limit and a memory
// limit, and collects what it prints. Tools in chat run through this: a tool that hangs is
// killed (with its whole process group) at its limit instead of hanging the chat.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mind4::chat {

struct ProcessLimits {
  double timeout_s = 10;
  size_t memory_bytes = 0;      // address-space limit (RLIMIT_AS); 0 = none
  size_t max_output = 1 << 16;  // bytes kept of stdout and of stderr each; the rest is dropped
  std::string working_dir;      // empty = the current one
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that ended it, if any
  bool timed_out = false;
  bool truncated = false;  // output beyond max_output was dropped
  std::string out, err;
  std::string summary() const;  // "exit 0", "killed after 2.0 s (time limit)", ...
};

// argv[0] is looked up in PATH. Error(kIoError) only when no process could be started at all.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          const ProcessLimits& limits);

}  // namespace mind4::chat
