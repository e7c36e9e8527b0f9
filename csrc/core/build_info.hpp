// What this build of the core was compiled with, reported to users and tests.
#pragma once

#include <string>

namespace hsafast {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string simd;       // widest vector extension enabled at compile time
  bool march_native;      // tuned for the building CPU
  int hardware_threads;   // std::thread::hardware_concurrency()
};

BuildInfo build_info();

}  // namespace hsafast
