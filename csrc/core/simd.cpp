#include "core/simd.hpp"

#include <cstdlib>
#include <stdexcept>

namespace hsafast::simd {

namespace {

constexpr const char* kNames[kPathCount] = {"scalar", "avx2", "avx512"};

bool detect(Path p) {
#if defined(HSAFAST_SIMD_X86)
  __builtin_cpu_init();  // may run before libgcc's own constructor
  switch (p) {
    case Path::kScalar:
      return true;
    case Path::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi2");
    case Path::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
  }
  return false;
#else
  return p == Path::kScalar;
#endif
}

std::string g_requested;

}  // namespace

namespace detail {
std::atomic<int> g_active{static_cast<int>(best())};
}

const char* name(Path p) { return kNames[static_cast<int>(p)]; }

bool parse(const std::string& text, Path* out) {
  for (int i = 0; i < kPathCount; ++i) {
    if (text == kNames[i]) {
      *out = static_cast<Path>(i);
      return true;
    }
  }
  return false;
}

bool compiled(Path p) {
#if defined(HSAFAST_SIMD_X86)
  (void)p;
  return true;
#else
  return p == Path::kScalar;
#endif
}

bool cpu_supports(Path p) { return detect(p); }

Path best() {
  for (int i = kPathCount - 1; i > 0; --i) {
    const auto p = static_cast<Path>(i);
    if (compiled(p) && cpu_supports(p)) return p;
  }
  return Path::kScalar;
}

void force(Path p) {
  if (!compiled(p))
    throw std::invalid_argument(std::string("the ") + name(p) +
                                " path is not compiled into this build (" +
                                "x86-64 builds with GCC or Clang have it)");
  if (!cpu_supports(p))
    throw std::invalid_argument(std::string("this CPU cannot run the ") + name(p) +
                                " path (the widest it supports is " + name(best()) + ")");
  detail::g_active.store(static_cast<int>(p), std::memory_order_relaxed);
}

void reset() { detail::g_active.store(static_cast<int>(best()), std::memory_order_relaxed); }

void apply_environment() {
  const char* value = std::getenv("HSAFAST_SIMD");
  g_requested = value == nullptr ? "" : value;
  if (g_requested.empty()) return;
  Path p;
  if (!parse(g_requested, &p))
    throw std::invalid_argument("HSAFAST_SIMD=" + g_requested +
                                " is not a SIMD path (scalar, avx2 or avx512)");
  try {
    force(p);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("HSAFAST_SIMD=" + g_requested + ": " + e.what());
  }
}

std::string requested() { return g_requested; }

}  // namespace hsafast::simd
