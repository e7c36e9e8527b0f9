// Minimal fork-join parallel loop over an index range, shared by every kernel.
//
// Kernels call parallel_for(n, grain, fn) with fn(begin, end); the range is cut
// into contiguous chunks, one per worker thread. No global pool: a kernel call
// costs one thread spawn per worker (tens of microseconds), which is negligible
// next to the tile-sized work each call does, and keeps the core free of state.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace hsafast {

// Threads used by kernels; 0 means "all hardware threads".
void set_num_threads(int n);
int get_num_threads();

template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_workers = (n + grain - 1) / grain;
  const int64_t workers = std::min<int64_t>(get_num_threads(), max_workers);
  if (workers <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + workers - 1) / workers;
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  threads.reserve(static_cast<size_t>(workers - 1));
  auto run = [&](int64_t w) {
    const int64_t begin = w * chunk;
    const int64_t end = std::min(n, begin + chunk);
    if (begin >= end) return;
    try {
      fn(begin, end);
    } catch (...) {
      errors[static_cast<size_t>(w)] = std::current_exception();
    }
  };
  for (int64_t w = 1; w < workers; ++w) threads.emplace_back(run, w);
  run(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace hsafast
