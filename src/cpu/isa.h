// Which instruction set the CPU kernels use. The library is compiled for baseline x86-64; the
// AVX2 and AVX-512 variants are compiled per function with __attribute__((target)) and chosen at
// run time: the best the CPU supports, or the one forced by the environment variable
// MIND4_CPU_ISA=scalar|avx2|avx512 (tests force each path in turn with set_isa).
#pragma once

#include <string_view>

namespace mind4::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

std::string_view isa_name(Isa isa);
// Whether this CPU can run the path (AVX2 needs avx2+fma+f16c; AVX-512 needs f, bw, vl, dq).
bool isa_supported(Isa isa);
// The best supported path, unless MIND4_CPU_ISA names one. An unknown name or a path the CPU
// lacks throws Error(kUnsupported) naming it.
Isa detect_isa();
// The path every kernel call uses now (detect_isa() on first use).
Isa active_isa();
// Forces a path; throws Error(kUnsupported) when the CPU lacks it.
void set_isa(Isa isa);

}  // namespace mind4::cpu

#define MIND4_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MIND4_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
