// Which SIMD code path the native kernels run, chosen at run time.
//
// The core is compiled for the baseline of its architecture (x86-64: SSE2), so one
// build runs on any CPU of that architecture. Hot loops are compiled twice more, for
// AVX2 + FMA (x86-64-v3) and for AVX-512 (x86-64-v4), with GCC/Clang target
// attributes, and each kernel runs the variant of simd::active(): the widest path both
// compiled in and supported by the CPU, unless a narrower one is forced
// (HSAFAST_SIMD=scalar|avx2|avx512, read once when the extension loads, or
// simd::force(), which `_core.set_simd` exposes to tests and benchmarks).
//
// Adopting it in a kernel:
//   - A loop the compiler vectorises on its own: write it once, in a lambda marked
//     HSAFAST_SIMD_LAMBDA, and call it through simd::parallel_for (instead of
//     hsafast::parallel_for) or simd::run. The lambda is inlined into a function
//     compiled for each path, so its loops are vectorised three times:
//
//       simd::parallel_for(n, grain, [&](int64_t b, int64_t e) HSAFAST_SIMD_LAMBDA {
//         for (int64_t i = b; i < e; ++i) out[i] = f(in[i]);
//       });
//
//     Helpers the loop calls must be inlined too (small `inline` functions are; mark
//     larger ones HSAFAST_SIMD_INLINE): a call that is not inlined runs baseline code.
//   - Code written per path (intrinsics, vector widths): one function per path, the
//     AVX ones marked HSAFAST_TARGET_AVX2 / HSAFAST_TARGET_AVX512, picked with
//     simd::select(scalar_fn, avx2_fn, avx512_fn) once per call (see stain.cpp).
// Never pass vector types by value between functions of different paths: baseline
// code passes 256/512-bit vectors in memory, AVX code in registers (use a pointer).
// tests/test_build_simd.py forces every path the machine runs and compares each with
// a NumPy reference; `python -m bench simd` times each path.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "core/parallel.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define HSAFAST_SIMD_X86 1
// x86-64-v3 (Haswell, Zen 1 and later).
#define HSAFAST_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c,movbe")))
// x86-64-v4 (Skylake-SP, Ice Lake, Zen 4 and later).
#define HSAFAST_TARGET_AVX512                                                               \
  __attribute__((target("avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi,bmi2," \
                        "lzcnt,popcnt,f16c,movbe")))
#else
#define HSAFAST_TARGET_AVX2
#define HSAFAST_TARGET_AVX512
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HSAFAST_SIMD_INLINE __attribute__((always_inline)) inline
#define HSAFAST_SIMD_LAMBDA __attribute__((always_inline))
#else
#define HSAFAST_SIMD_INLINE inline
#define HSAFAST_SIMD_LAMBDA
#endif

namespace hsafast::simd {

enum class Path : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr int kPathCount = 3;

// "scalar", "avx2", "avx512".
const char* name(Path p);

// Parses a name(); false for anything else.
bool parse(const std::string& text, Path* out);

// This build has code for p (x86-64 with GCC or Clang: every path; elsewhere scalar).
bool compiled(Path p);

// The running CPU (and OS) can execute p.
bool cpu_supports(Path p);

// The widest path that is both compiled and supported.
Path best();

// Forces p for every later kernel call; throws std::invalid_argument naming the
// reason when p is not compiled or not supported by this CPU.
void force(Path p);

// Back to best().
void reset();

// Applies HSAFAST_SIMD when set (called once when the extension loads); throws
// std::invalid_argument for an unknown or unavailable value.
void apply_environment();

// HSAFAST_SIMD as read by apply_environment() ("" when unset).
std::string requested();

namespace detail {
extern std::atomic<int> g_active;
}

// The path kernels run now.
inline Path active() { return static_cast<Path>(detail::g_active.load(std::memory_order_relaxed)); }

// The function of the active path among three variants.
template <typename Fn>
Fn select(Fn scalar, Fn avx2, Fn avx512) {
  switch (active()) {
    case Path::kAvx512:
      return avx512;
    case Path::kAvx2:
      return avx2;
    default:
      return scalar;
  }
}

namespace detail {
template <typename Fn, typename... Args>
auto run_scalar(Fn& fn, Args... args) {
  return fn(args...);
}
template <typename Fn, typename... Args>
HSAFAST_TARGET_AVX2 auto run_avx2(Fn& fn, Args... args) {
  return fn(args...);
}
template <typename Fn, typename... Args>
HSAFAST_TARGET_AVX512 auto run_avx512(Fn& fn, Args... args) {
  return fn(args...);
}
}  // namespace detail

// fn(args...) compiled for path p (fn: a lambda marked HSAFAST_SIMD_LAMBDA).
template <typename Fn, typename... Args>
auto run_on(Path p, Fn& fn, Args... args) {
  switch (p) {
    case Path::kAvx512:
      return detail::run_avx512(fn, args...);
    case Path::kAvx2:
      return detail::run_avx2(fn, args...);
    default:
      return detail::run_scalar(fn, args...);
  }
}

// fn(args...) compiled for the active path.
template <typename Fn, typename... Args>
auto run(Fn&& fn, Args... args) {
  return run_on(active(), fn, args...);
}

// hsafast::parallel_for whose chunks fn(begin, end) run compiled for the active path.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  const Path p = active();
  ::hsafast::parallel_for(n, grain, [&](int64_t b, int64_t e) { run_on(p, fn, b, e); });
}

}  // namespace hsafast::simd
