// Python bindings of cell detection: uint8 tiles in (no copy), per-cell arrays
// out, the GIL released while the kernel runs. The filters are bound too, so that
// tests can compare each against OpenCV or SciPy on the same input.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cells.hpp"
#include "core/cells_filters.hpp"

namespace py = pybind11;
namespace cl = hsafast::cells;

namespace {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::tuple detect(const py::array& tiles, const F32& od_lut, const F32& inv, int hema, int dab,
                 bool membranous, double detect_sigma, double shape_sigma, int peak_window,
                 int background_diameter, double mean_radius, double radius, double reach, float min_od,
                 float min_contrast, float mask_min, std::array<double, 3> thresholds, double mpp,
                 double min_area_um2, double min_width_um, double min_fill, int min_neighbours,
                 double neighbour_px, double min_group_share, double group_px, double ring_px,
                 double ring_coverage, const std::string& simd) {
  if (!py::isinstance<py::array_t<uint8_t>>(tiles) || tiles.dtype().kind() != 'u' ||
      tiles.itemsize() != 1)
    throw py::type_error("cells_detect takes uint8 RGB tiles");
  if (!(tiles.flags() & py::array::c_style))
    throw py::value_error("cells_detect takes C-contiguous tiles (use np.ascontiguousarray)");
  if (tiles.ndim() != 4 || tiles.shape(3) != 3)
    throw py::value_error("tiles must be (N, H, W, 3)");
  if (od_lut.ndim() != 1 || od_lut.shape(0) != 256) throw py::value_error("od_lut needs 256 entries");
  if (inv.ndim() != 2 || inv.shape(0) != 3 || inv.shape(1) != 3)
    throw py::value_error("inv must be 3 x 3");
  if (hema < 0 || hema > 2 || dab < 0 || dab > 2 || hema == dab)
    throw py::value_error("hematoxylin and DAB must be two different stain indices 0-2");
  if (peak_window < 1 || peak_window % 2 == 0 || background_diameter < 1 ||
      background_diameter % 2 == 0)
    throw py::value_error("peak_window and background_diameter must be odd and positive");
  if (!(detect_sigma > 0 && shape_sigma > 0 && mean_radius >= 1 && mpp > 0 && neighbour_px > 0 &&
        group_px > 0 && reach > 0 && reach < 4000))
    throw py::value_error(
        "sigmas, mean_radius, reach, mpp, neighbour_px and group_px must be positive");
  if (!(min_group_share >= 0 && min_group_share <= 1))
    throw py::value_error("min_group_share must lie in [0, 1]");
  if (detect_sigma > 1000 || shape_sigma > 1000 || background_diameter > 4001 || peak_window > 4001)
    throw py::value_error("filter sizes above a few thousand pixels are not supported");
  cl::Params p;
  for (int i = 0; i < 256; ++i) p.od_lut[i] = od_lut.at(i);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) p.inv[i][j] = inv.at(i, j);
  p.hema = hema;
  p.dab = dab;
  p.membranous = membranous;
  p.detect_sigma = detect_sigma;
  p.shape_sigma = shape_sigma;
  p.peak_window = peak_window;
  p.background_diameter = background_diameter;
  p.mean_radius = mean_radius;
  p.radius = radius;
  p.reach = reach;
  p.min_od = min_od;
  p.min_contrast = min_contrast;
  p.mask_min = mask_min;
  for (int k = 0; k < 3; ++k) p.thresholds[k] = thresholds[static_cast<size_t>(k)];
  p.mpp = mpp;
  p.min_area_um2 = min_area_um2;
  p.min_width_um = min_width_um;
  p.min_fill = min_fill;
  p.min_neighbours = min_neighbours;
  p.neighbour_px = neighbour_px;
  p.min_group_share = min_group_share;
  p.group_px = group_px;
  p.ring_px = ring_px;
  p.ring_coverage = ring_coverage;
  try {
    p.simd = cl::resolve_simd(cl::parse_simd(simd));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  const int64_t n = tiles.shape(0), h = tiles.shape(1), w = tiles.shape(2);
  std::vector<std::vector<cl::Cell>> found;
  {
    py::gil_scoped_release release;
    cl::detect(static_cast<const uint8_t*>(tiles.data()), n, h, w, p, found);
  }
  py::ssize_t total = 0;
  py::array_t<int64_t> counts(n);
  for (int64_t t = 0; t < n; ++t) {
    counts.mutable_at(t) = static_cast<int64_t>(found[static_cast<size_t>(t)].size());
    total += counts.at(t);
  }
  py::array_t<double> xy({total, py::ssize_t{2}});
  py::array_t<double> dab_out(total), area(total), width(total), fill(total);
  py::array_t<int8_t> grade(total);
  py::array_t<bool> tumour(total);
  double* pxy = xy.mutable_data();
  py::ssize_t k = 0;
  for (const auto& tile : found)
    for (const auto& c : tile) {
      pxy[2 * k] = c.x;
      pxy[2 * k + 1] = c.y;
      dab_out.mutable_at(k) = c.dab;
      grade.mutable_at(k) = c.grade;
      area.mutable_at(k) = c.area_um2;
      width.mutable_at(k) = c.width_um;
      fill.mutable_at(k) = c.fill;
      tumour.mutable_at(k) = c.tumour;
      ++k;
    }
  return py::make_tuple(counts, xy, dab_out, grade, area, width, fill, tumour);
}

cl::Simd simd_of(const std::string& name) {
  try {
    return cl::resolve_simd(cl::parse_simd(name));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::array_t<float> check_map(const F32& img) {
  if (img.ndim() != 2 || img.shape(0) < 1 || img.shape(1) < 1)
    throw py::value_error("expected a non-empty 2-D float32 map");
  return py::array_t<float>({img.shape(0), img.shape(1)});
}

py::array_t<float> blur(const F32& img, double sigma, const std::string& simd) {
  if (!(sigma > 0 && sigma < 1000)) throw py::value_error("sigma must be in (0, 1000)");
  auto out = check_map(img);
  const auto kernel = cl::gaussian_half_kernel(sigma);
  const cl::Simd path = simd_of(simd);
  {
    py::gil_scoped_release release;
    cl::FilterScratch s;
    cl::gaussian_blur(img.data(), img.shape(0), img.shape(1), kernel, out.mutable_data(),
                      img.shape(1), s, path);
  }
  return out;
}

py::array_t<float> erode(const F32& img, int diameter, const std::string& simd) {
  if (diameter < 1 || diameter % 2 == 0 || diameter > 4001)
    throw py::value_error("diameter must be odd, 1-4001");
  auto out = check_map(img);
  const auto hw = cl::disk_half_widths(diameter);
  const cl::Simd path = simd_of(simd);
  {
    py::gil_scoped_release release;
    cl::FilterScratch s;
    cl::erode_disk(img.data(), img.shape(0), img.shape(1), hw, out.mutable_data(), s, path);
  }
  return out;
}

py::array_t<uint8_t> peak_candidates(const F32& img, float min_value, const std::string& simd) {
  if (img.ndim() != 2 || img.shape(0) < 1 || img.shape(1) < 1)
    throw py::value_error("expected a non-empty 2-D float32 map");
  py::array_t<uint8_t> out({img.shape(0), img.shape(1)});
  const cl::Simd path = simd_of(simd);
  {
    py::gil_scoped_release release;
    cl::FilterScratch s;
    cl::peak_candidates(img.data(), img.shape(0), img.shape(1), min_value, out.mutable_data(), s,
                        path);
  }
  return out;
}

}  // namespace

void init_cells(py::module_& m) {
  m.def("cells_detect", &detect, py::arg("tiles"), py::arg("od_lut"), py::arg("inv"),
        py::arg("hema"), py::arg("dab"), py::arg("membranous"), py::arg("detect_sigma"),
        py::arg("shape_sigma"), py::arg("peak_window"), py::arg("background_diameter"),
        py::arg("mean_radius"), py::arg("radius"), py::arg("reach"), py::arg("min_od"), py::arg("min_contrast"),
        py::arg("mask_min"), py::arg("thresholds"), py::arg("mpp"), py::arg("min_area_um2"),
        py::arg("min_width_um"), py::arg("min_fill"), py::arg("min_neighbours"),
        py::arg("neighbour_px"), py::arg("min_group_share"), py::arg("group_px"),
        py::arg("ring_px"), py::arg("ring_coverage"),
        py::arg("simd") = "auto",
        "Cells of N uint8 RGB tiles: (counts per tile, xy, dab, grade, area_um2, width_um, fill, "
        "tumour), the per-cell arrays concatenated over tiles.");
  m.def("cells_simd_paths", &cl::simd_paths, "SIMD paths of the cell filters this CPU can run.");
  m.def("cells_blur", &blur, py::arg("image"), py::arg("sigma"), py::arg("simd") = "auto",
        "Gaussian blur of a float32 map as cv2.GaussianBlur(image, (0, 0), sigma).");
  m.def("cells_erode", &erode, py::arg("image"), py::arg("diameter"), py::arg("simd") = "auto",
        "Erosion of a float32 map by cv2's elliptic disk of that diameter, reflected borders.");
  m.def("cells_peak_candidates", &peak_candidates, py::arg("image"), py::arg("min_value"),
        py::arg("simd") = "auto",
        "uint8 mask: above min_value and the largest of its 3 x 3 neighbourhood.");
}
