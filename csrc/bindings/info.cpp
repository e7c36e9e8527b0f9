#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "core/build_info.hpp"
#include "core/parallel.hpp"
#include "core/simd.hpp"

namespace py = pybind11;

namespace {

// Forces a SIMD path (None: the widest this CPU runs); returns the path before.
std::string set_simd(const std::optional<std::string>& path) {
  namespace simd = hsafast::simd;
  const std::string before = simd::name(simd::active());
  if (!path) {
    simd::reset();
    return before;
  }
  simd::Path p;
  if (!simd::parse(*path, &p))
    throw py::value_error("unknown SIMD path '" + *path + "' (scalar, avx2 or avx512)");
  try {
    simd::force(p);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return before;
}

}  // namespace

void init_info(py::module_& m) {
  // HSAFAST_SIMD is read once, here; a bad value fails the import with its reason.
  hsafast::simd::apply_environment();
  m.def(
      "build_info",
      [] {
        const auto info = hsafast::build_info();
        py::dict d;
        d["version"] = info.version;
        d["compiler"] = info.compiler;
        d["simd"] = info.simd;
        d["simd_compiled"] = info.simd_compiled;
        d["simd_supported"] = info.simd_supported;
        d["simd_requested"] = info.simd_requested;
        d["simd_baseline"] = info.simd_baseline;
        d["march_native"] = info.march_native;
        d["hardware_threads"] = info.hardware_threads;
        d["threads"] = hsafast::get_num_threads();
#ifdef HSAFAST_WITH_CUDA
        d["cuda"] = true;
        d["cuda_architectures"] = HSAFAST_CUDA_ARCHS;
#else
        d["cuda"] = false;
        d["cuda_architectures"] = "";
#endif
        return d;
      },
      "What this build was compiled with and runs: version, compiler, SIMD paths compiled in, "
      "supported by this CPU and active now, CUDA, threads.");
  m.def("set_simd", &set_simd, py::arg("path"),
        "Force the SIMD path of every native kernel ('scalar', 'avx2', 'avx512'; None: the "
        "widest this CPU runs) for the whole process; returns the path before. ValueError "
        "when the path is not compiled in or this CPU cannot run it.");
  m.def("set_num_threads", &hsafast::set_num_threads, py::arg("n"),
        "Threads used by native kernels (0: all hardware threads).");
  m.def("get_num_threads", &hsafast::get_num_threads, "Threads used by native kernels.");
}
