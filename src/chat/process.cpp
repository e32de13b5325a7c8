#include "chat/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "mind4/status.h"

namespace mind4::chat {

namespace {

struct PipePair {
  int fd[2] = {-1, -1};
  PipePair() {
    MIND4_CHECK(::pipe2(fd, O_CLOEXEC) == 0, Status::kIoError, "pipe: ", std::strerror(errno));
  }
  ~PipePair() {
    for (int& f : fd) close_end(f);
  }
  static void close_end(int& f) {
    if (f >= 0) ::close(f);
    f = -1;
  }
};

}  // namespace

std::string ProcessResult::summary() const {
  if (timed_out) return "killed at its time limit";
  if (signal) return std::string("killed by signal ") + strsignal(signal);
  return "exit " + std::to_string(exit_code);
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          const ProcessLimits& limits) {
  MIND4_CHECK(!argv.empty(), Status::kInvalidArgument, "run_process: empty command");
  PipePair in, out, err, exec_status;
  // The argument list is made before the fork: the child may not allocate (not async-signal-safe,
  // and under a memory limit an allocator that needs a new mapping fails; AddressSanitizer's did,
  // now and then, in CI).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  MIND4_CHECK(pid >= 0, Status::kIoError, "fork: ", std::strerror(errno));
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. Its own process group, so that a timeout
    // kills whatever it started too.
    ::setpgid(0, 0);
    ::dup2(in.fd[0], 0);
    ::dup2(out.fd[1], 1);
    ::dup2(err.fd[1], 2);
    if (limits.memory_bytes) {
      rlimit rl{limits.memory_bytes, limits.memory_bytes};
      ::setrlimit(RLIMIT_AS, &rl);
    }
    if (!limits.working_dir.empty() && ::chdir(limits.working_dir.c_str()) != 0) {
      int e = errno;
      (void)!::write(exec_status.fd[1], &e, sizeof e);
      ::_exit(127);
    }
    ::execvp(args[0], args.data());
    int e = errno;
    (void)!::write(exec_status.fd[1], &e, sizeof e);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: no race with the child's own call
  PipePair::close_end(in.fd[0]);
  PipePair::close_end(out.fd[1]);
  PipePair::close_end(err.fd[1]);
  PipePair::close_end(exec_status.fd[1]);
  int exec_errno = 0;
  const bool exec_failed = ::read(exec_status.fd[0], &exec_errno, sizeof exec_errno) > 0;

  ProcessResult r;
  // A child that exits without reading its input must not take this process down with SIGPIPE.
  struct SigpipeIgnored {
    struct sigaction old {};
    SigpipeIgnored() {
      struct sigaction ign {};
      ign.sa_handler = SIG_IGN;
      ::sigaction(SIGPIPE, &ign, &old);
    }
    ~SigpipeIgnored() { ::sigaction(SIGPIPE, &old, nullptr); }
  } sigpipe_ignored;
  ::fcntl(in.fd[1], F_SETFL, O_NONBLOCK);
  size_t written = 0;
  if (input.empty() || exec_failed) PipePair::close_end(in.fd[1]);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(limits.timeout_s);
  char buf[4096];
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    pollfd fds[3];
    int n = 0;
    for (int f : {out.fd[0], err.fd[0]})
      if (f >= 0) fds[n++] = {f, POLLIN, 0};
    if (in.fd[1] >= 0) fds[n++] = {in.fd[1], POLLOUT, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    if (::poll(fds, n, int(std::min<long long>(left, 1000))) < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in.fd[1]) {
        ssize_t w = ::write(in.fd[1], input.data() + written, input.size() - written);
        if (w > 0) written += size_t(w);
        if (w < 0 && errno != EAGAIN) written = input.size();  // the child closed its stdin
        if (written == input.size()) PipePair::close_end(in.fd[1]);
        continue;
      }
      int& f = fds[i].fd == out.fd[0] ? out.fd[0] : err.fd[0];
      std::string& dst = &f == &out.fd[0] ? r.out : r.err;
      ssize_t got = ::read(f, buf, sizeof buf);
      if (got <= 0) {
        PipePair::close_end(f);
        continue;
      }
      size_t keep =
          std::min(size_t(got), limits.max_output - std::min(limits.max_output, dst.size()));
      dst.append(buf, keep);
      r.truncated |= keep < size_t(got);
    }
  }
  if (r.timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!r.timed_out) ::kill(-pid, SIGKILL);  // anything it left running in its group
  MIND4_CHECK(!exec_failed, Status::kIoError, "cannot run '", argv[0],
              "': ", std::strerror(exec_errno));
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace mind4::chat
