// Errors in Mind 4. Every failure a user can cause (bad file, bad config, bad request) is a
// mind4::Error carrying a Status and a message that names the offending thing (file, field,
// tensor, token). Front ends print the message; nothing a user does should crash the process.
#pragma once

#include <stdexcept>
#include <string>

namespace mind4 {

enum class Status {
  kOk = 0,
  kInvalidArgument,    // a flag, API argument or request field is wrong
  kInvalidConfig,      // config.json / train.yaml: unknown, missing or ill-typed field
  kIoError,            // a file cannot be opened, read, written or mapped
  kCorruptFile,        // a file is readable but its content is malformed (safetensors, vocab)
  kMissingTensor,      // a checkpoint lacks a tensor the model needs
  kShapeMismatch,      // a tensor has the wrong dtype or shape for its role
  kContextOverflow,    // a sequence would exceed its context length
  kTokenOutOfRange,    // a token id >= vocab size
  kUnsupported,        // a valid request this build or machine cannot serve (e.g. no GPU)
  kOutOfMemory,        // host or device memory exhausted
  kDeviceError,        // a CUDA call failed; the message names the kernel or call
  kInternal,           // a bug in Mind 4
};

const char* status_name(Status s);

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

}  // namespace mind4

// Throws mind4::Error(status, message) when cond is false. The message is built only on failure.
#define MIND4_CHECK(cond, status, ...)                                        \
  do {                                                                        \
    if (!(cond)) throw ::mind4::Error((status), ::mind4::detail::cat(__VA_ARGS__)); \
  } while (0)

#include <sstream>
namespace mind4::detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace mind4::detail
