#include "core/build_info.hpp"

#include <atomic>
#include <thread>

#include "core/parallel.hpp"
#include "core/simd.hpp"

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
  info.simd_baseline = "avx512";
#elif defined(__AVX2__)
  info.simd_baseline = "avx2";
#elif defined(__AVX__)
  info.simd_baseline = "avx";
#elif defined(__SSE4_2__)
  info.simd_baseline = "sse4.2";
#elif defined(__SSE2__)
  info.simd_baseline = "sse2";
#elif defined(__ARM_NEON)
  info.simd_baseline = "neon";
#else
  info.simd_baseline = "none";
#endif
  for (int i = 0; i < simd::kPathCount; ++i) {
    const auto p = static_cast<simd::Path>(i);
    if (!simd::compiled(p)) continue;
    info.simd_compiled.emplace_back(simd::name(p));
    if (simd::cpu_supports(p)) info.simd_supported.emplace_back(simd::name(p));
  }
  info.simd = simd::name(simd::active());
  info.simd_requested = simd::requested();
#ifdef HSAFAST_MARCH_NATIVE
  info.march_native = true;
#else
  info.march_native = false;
#endif
  info.hardware_threads = hardware_threads();
  return info;
}

}  // namespace hsafast
