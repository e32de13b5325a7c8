// The per-thread switch of programmatic dependent launches (pdl.cuh).
#include "cuda/pdl.h"

namespace mind4::cuda {

thread_local bool pdl_launches = false;

}  // namespace mind4::cuda
