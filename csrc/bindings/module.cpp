// The one extension module, hsafast._core, composed from one binding file per area.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void init_info(py::module_& m);
void init_tissue(py::module_& m);
void init_stain(py::module_& m);
void init_cells(py::module_& m);
void init_pooling(py::module_& m);
void init_io(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "hsafast native core: tissue detection, stain statistics, attention pooling";
  init_info(m);
  init_tissue(m);
  init_stain(m);
  init_cells(m);
  init_pooling(m);
  init_io(m);
}
