// The CUDA entry points of a build without nvcc: each says so, instead of a link error or a
// silent fall-back to the CPU.
#ifndef MIND4_HAVE_CUDA

#include "mind4/status.h"
#include "model/backend.h"

namespace mind4 {

namespace {
[[noreturn]] void no_cuda_build(const char* what) {
  throw Error(Status::kUnsupported,
              detail::cat(what,
                          ": backend cuda is not compiled into this build of mind4 (nvcc "
                          "was not found, or MIND4_CUDA was OFF, when it was configured); "
                          "reconfigure on a machine with the CUDA toolkit, or use backend "
                          "cpu"));
}
}  // namespace

bool cuda_compiled() {
  return false;
}

std::shared_ptr<const cuda::DeviceModel> cuda_upload_model(const ModelWeights&,
                                                           const ExecutionConfig&) {
  no_cuda_build("Model::load");
}

std::unique_ptr<StepBackend> make_cuda_backend(const Model::Impl&, const ContextOptions&, int) {
  no_cuda_build("Context");
}

}  // namespace mind4

#endif  // MIND4_HAVE_CUDA
