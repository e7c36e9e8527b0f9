#include <pybind11/pybind11.h>

namespace py = pybind11;

void init_io(py::module_& m) { (void)m; }
