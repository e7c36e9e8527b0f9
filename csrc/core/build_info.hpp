// What this build of the core was compiled with, reported to users and tests.
#pragma once

#include <string>
#include <vector>

namespace hsafast {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string simd_baseline;                // widest extension every function may use
  std::vector<std::string> simd_compiled;   // SIMD paths compiled in (simd.hpp)
  std::vector<std::string> simd_supported;  // of those, the ones this CPU runs
  std::string simd;                         // the path kernels run now
  std::string simd_requested;               // HSAFAST_SIMD ("" when unset)
  bool march_native;                        // tuned for the building CPU
  int hardware_threads;                     // std::thread::hardware_concurrency()
};

BuildInfo build_info();

}  // namespace hsafast
