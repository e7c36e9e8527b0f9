// Python bindings of the stain kernels: NumPy in, NumPy out, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include <stdexcept>

#include "core/stain.hpp"

namespace py = pybind11;
namespace st = hsafast::stain;

namespace {

using U8 = py::array_t<uint8_t>;
using F32 = py::array_t<float>;

// Checks dtype, contiguity and the trailing channel axis without copying.
void check_rgb(const py::array& a) {
  if (!py::isinstance<U8>(a) || a.dtype().kind() != 'u' || a.itemsize() != 1)
    throw py::type_error("stain kernels take uint8 RGB arrays, got dtype " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error("stain kernels take C-contiguous arrays (use np.ascontiguousarray)");
  if (a.ndim() < 2 || a.shape(a.ndim() - 1) != 3)
    throw py::value_error("stain kernels take arrays whose last axis is RGB (size 3)");
}

void copy_lut_and_matrix(const F32& lut, const F32& inv, float* lut_out, float inv_out[3][3]) {
  if (lut.ndim() != 1 || lut.shape(0) != 256)
    throw py::value_error("od_lut must have 256 entries");
  if (inv.ndim() != 2 || inv.shape(0) != 3 || inv.shape(1) != 3)
    throw py::value_error("inv must be a 3x3 matrix");
  auto l = lut.unchecked<1>();
  auto m = inv.unchecked<2>();
  for (int i = 0; i < 256; ++i) lut_out[i] = l(i);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) inv_out[i][j] = m(i, j);
}

py::array_t<double> tile_stats(const py::array& tiles, const F32& od_lut, const F32& inv, int dab,
                               int hema, std::array<float, 3> dab_thresholds,
                               float hema_threshold, float tissue_od, int saturation_level) {
  check_rgb(tiles);
  if (tiles.ndim() != 4 && tiles.ndim() != 3)
    throw py::value_error("tiles must be (N, H, W, 3) or (H, W, 3)");
  if (dab < 0 || dab > 2 || hema < 0 || hema > 2)
    throw py::value_error("stain indices must be 0, 1 or 2");
  st::StatsParams p;
  copy_lut_and_matrix(od_lut, inv, p.od_lut, p.inv);
  p.dab = dab;
  p.hema = hema;
  for (int k = 0; k < 3; ++k) p.dab_thresholds[k] = dab_thresholds[k];
  p.hema_threshold = hema_threshold;
  p.tissue_od = tissue_od;
  p.saturation_level = saturation_level;
  const bool batched = tiles.ndim() == 4;
  const int64_t n = batched ? tiles.shape(0) : 1;
  const int64_t h = tiles.shape(batched ? 1 : 0);
  const int64_t w = tiles.shape(batched ? 2 : 1);
  py::array_t<double> out({n, static_cast<int64_t>(st::kStatCount)});
  const auto* src = static_cast<const uint8_t*>(tiles.data());
  double* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    st::tile_stats(src, n, h, w, p, dst);
  }
  return out;
}

py::array_t<float> concentrations(const py::array& rgb, const F32& od_lut, const F32& inv,
                                  bool clamp) {
  check_rgb(rgb);
  float lut[256];
  float m[3][3];
  copy_lut_and_matrix(od_lut, inv, lut, m);
  std::vector<py::ssize_t> shape(rgb.shape(), rgb.shape() + rgb.ndim());
  py::array_t<float> out(shape);
  const int64_t npix = rgb.size() / 3;
  const auto* src = static_cast<const uint8_t*>(rgb.data());
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    st::concentrations(src, npix, lut, m, clamp, dst);
  }
  return out;
}

}  // namespace

void init_stain(py::module_& m) {
  m.def("stain_tile_stats", &tile_stats, py::arg("tiles"), py::arg("od_lut"), py::arg("inv"),
        py::arg("dab"), py::arg("hema"), py::arg("dab_thresholds"), py::arg("hema_threshold"),
        py::arg("tissue_od"), py::arg("saturation_level"),
        "Per-tile stain statistics (N x 9 float64: tissue, dab1, dab2, dab3, hema, saturated, "
        "dab_sum, hema_sum, residual_sum) of uint8 RGB tiles, in one pass.");
  m.def("stain_concentrations", &concentrations, py::arg("rgb"), py::arg("od_lut"),
        py::arg("inv"), py::arg("clamp") = true,
        "Stain concentrations (..., 3 float32) of uint8 RGB pixels: od_lut[rgb] @ inv.");
  m.attr("STAIN_STAT_COUNT") = static_cast<int>(st::kStatCount);
}
