// `mind4 info`: what this build can do (CPU features, CUDA), to paste into a bug report.
#include <cstdio>

#include "command.h"

namespace {

void setup_info(CLI::App& app) {
  app.callback([] {
    std::printf("mind4 0.1.0\n");
    __builtin_cpu_init();
    std::printf("cpu: avx2=%d avx512f=%d avx512bf16=%d\n", !!__builtin_cpu_supports("avx2"),
                !!__builtin_cpu_supports("avx512f"), !!__builtin_cpu_supports("avx512bf16"));
#ifdef MIND4_HAVE_CUDA
    std::printf("cuda: compiled in\n");
#else
    std::printf("cuda: not compiled in (no nvcc at build time)\n");
#endif
  });
}

mind4::cli::Command register_info{"info", "Show what this build supports (CPU features, CUDA)", setup_info};

}  // namespace
