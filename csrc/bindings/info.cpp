#include <pybind11/pybind11.h>

#include "core/build_info.hpp"
#include "core/parallel.hpp"

namespace py = pybind11;

void init_info(py::module_& m) {
  m.def(
      "build_info",
      [] {
        const auto info = hsafast::build_info();
        py::dict d;
        d["version"] = info.version;
        d["compiler"] = info.compiler;
        d["simd"] = info.simd;
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
      "What this build was compiled with: version, compiler, SIMD level, CUDA, threads.");
  m.def("set_num_threads", &hsafast::set_num_threads, py::arg("n"),
        "Threads used by native kernels (0: all hardware threads).");
  m.def("get_num_threads", &hsafast::get_num_threads, "Threads used by native kernels.");
}
