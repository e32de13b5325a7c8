#include "mind4/status.h"

namespace mind4 {

const char* status_name(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kInvalidConfig: return "invalid config";
    case Status::kIoError: return "I/O error";
    case Status::kCorruptFile: return "corrupt file";
    case Status::kMissingTensor: return "missing tensor";
    case Status::kShapeMismatch: return "shape mismatch";
    case Status::kContextOverflow: return "context overflow";
    case Status::kTokenOutOfRange: return "token out of range";
    case Status::kUnsupported: return "unsupported";
    case Status::kOutOfMemory: return "out of memory";
    case Status::kDeviceError: return "device error";
    case Status::kInternal: return "internal error";
  }
  return "unknown";
}

}  // namespace mind4
