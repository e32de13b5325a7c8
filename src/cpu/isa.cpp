#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "mind4/status.h"

namespace mind4::cpu {
namespace {
std::atomic<int> g_isa{-1};
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             isa_supported(Isa::kAvx2);
  }
  return false;
}

Isa detect_isa() {
  if (const char* env = std::getenv("MIND4_CPU_ISA"); env && *env) {
    std::string name = env;
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (name == isa_name(isa)) {
        MIND4_CHECK(isa_supported(isa), Status::kUnsupported, "MIND4_CPU_ISA=", name,
                    ": this CPU does not support that instruction set");
        return isa;
      }
    }
    throw Error(Status::kUnsupported,
                "MIND4_CPU_ISA=" + name + ": unknown; use scalar, avx2 or avx512");
  }
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa active_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = int(detect_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return Isa(v);
}

void set_isa(Isa isa) {
  MIND4_CHECK(isa_supported(isa), Status::kUnsupported, "CPU path ", isa_name(isa),
              " is not supported by this CPU");
  g_isa.store(int(isa), std::memory_order_relaxed);
}

}  // namespace mind4::cpu
