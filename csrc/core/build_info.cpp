#include "core/build_info.hpp"

#include <atomic>
#include <thread>

#include "core/parallel.hpp"

namespace hsafast {

namespace {
std::atomic<int> g_num_threads{0};

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}
}  // namespace

void set_num_threads(int n) { g_num_threads.store(n < 0 ? 0 : n); }

int get_num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : hardware_threads();
}

BuildInfo build_info() {
  BuildInfo info;
  info.version = HSAFAST_VERSION;
#if defined(__clang__)
  info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.compiler = std::string("gcc ") + __VERSION__;
#else
  info.compiler = "unknown";
#endif
#if defined(__AVX512F__)
  info.simd = "avx512";
#elif defined(__AVX2__)
  info.simd = "avx2";
#elif defined(__AVX__)
  info.simd = "avx";
#elif defined(__SSE4_2__)
  info.simd = "sse4.2";
#elif defined(__SSE2__)
  info.simd = "sse2";
#elif defined(__ARM_NEON)
  info.simd = "neon";
#else
  info.simd = "none";
#endif
#ifdef HSAFAST_MARCH_NATIVE
  info.march_native = true;
#else
  info.march_native = false;
#endif
  info.hardware_threads = hardware_threads();
  return info;
}

}  // namespace hsafast
