// Python bindings of the tissue kernels: NumPy buffers in and out, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "core/tissue.hpp"

namespace py = pybind11;
namespace ht = hsafast::tissue;

namespace {

using u8_array = py::array_t<uint8_t, py::array::c_style>;

// A C-contiguous uint8 array of the given rank; anything else is rejected
// (no silent copies of large images).
u8_array require_u8(const py::array& a, int ndim, const char* what) {
  if (a.dtype().kind() != 'u' && a.dtype().kind() != 'b')
    throw py::type_error(std::string(what) + " must be a uint8 or bool array, got " +
                         std::string(py::str(a.dtype())));
  if (a.itemsize() != 1)
    throw py::type_error(std::string(what) + " must have 1-byte elements (uint8 or bool)");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(what) + " must have " + std::to_string(ndim) +
                          " dimensions, got " + std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous");
  return py::reinterpret_borrow<u8_array>(a);
}

u8_array require_rgb(const py::array& a) {
  auto rgb = require_u8(a, 3, "rgb");
  if (rgb.shape(2) != 3) throw py::value_error("rgb must have shape (height, width, 3)");
  return rgb;
}

u8_array new_mask(int64_t h, int64_t w) { return u8_array({h, w}); }

std::array<uint8_t, 3> to_background(const std::array<int, 3>& background) {
  std::array<uint8_t, 3> bg{};
  for (int c = 0; c < 3; ++c) {
    if (background[c] < 0 || background[c] > 255)
      throw py::value_error("background values must be in 0..255");
    bg[c] = static_cast<uint8_t>(background[c]);
  }
  return bg;
}

}  // namespace

void init_tissue(py::module_& m) {
  m.def(
      "tissue_background",
      [](const py::array& image, int64_t stride, double percentile, int floor) {
        auto rgb = require_rgb(image);
        std::array<uint8_t, 3> bg{};
        {
          py::gil_scoped_release release;
          bg = ht::estimate_background(rgb.data(), rgb.shape(0) * rgb.shape(1), stride, percentile,
                                       floor);
        }
        return py::make_tuple(bg[0], bg[1], bg[2]);
      },
      py::arg("rgb"), py::arg("stride") = 1, py::arg("percentile") = 99.0, py::arg("floor") = 200,
      "Per-channel glass intensity over every stride-th pixel: each channel's percentile, "
      "raised to at least floor.");

  m.def("sample_stride", &ht::sample_stride, py::arg("n_pixels"),
        "Pixel stride the pipeline samples for its background and OD statistics.");

  m.def(
      "tissue_od_histogram",
      [](const py::array& image, std::array<int, 3> background, bool exclude_artefacts,
         int black_level, int green_margin, int64_t stride) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        std::array<int64_t, 256> hist{};
        {
          py::gil_scoped_release release;
          hist = ht::od_histogram(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, exclude_artefacts,
                                  black_level, green_margin, stride);
        }
        py::array_t<int64_t> out(256);
        std::copy(hist.begin(), hist.end(), out.mutable_data());
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("exclude_artefacts") = true,
      py::arg("black_level") = 50, py::arg("green_margin") = 20, py::arg("stride") = 1,
      "Histogram of the quantised OD over every stride-th pixel.");

  m.def(
      "tissue_od_threshold",
      [](const py::array& image, std::array<int, 3> background, int t, bool exclude_artefacts,
         int black_level, int green_margin) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        {
          py::gil_scoped_release release;
          ht::od_threshold(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, t, exclude_artefacts,
                           black_level, green_margin, out.mutable_data());
        }
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("t"), py::arg("exclude_artefacts") = true,
      py::arg("black_level") = 50, py::arg("green_margin") = 20,
      "Quantised OD > t as a 0/1 mask, straight from the RGB pixels.");

  m.def(
      "tissue_od_map",
      [](const py::array& image, std::array<int, 3> background, bool exclude_artefacts,
         int black_level, int green_margin) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        {
          py::gil_scoped_release release;
          ht::od_map(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, exclude_artefacts, black_level,
                     green_margin, out.mutable_data());
        }
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("exclude_artefacts") = true,
      py::arg("black_level") = 50, py::arg("green_margin") = 20,
      "Quantised (x100) relative optical density of the most absorbing channel.");

  m.def(
      "tissue_histogram",
      [](const py::array& x) {
        auto a = require_u8(x, x.ndim(), "x");
        std::array<int64_t, 256> hist{};
        {
          py::gil_scoped_release release;
          hist = ht::histogram(a.data(), a.size());
        }
        py::array_t<int64_t> out(256);
        std::copy(hist.begin(), hist.end(), out.mutable_data());
        return out;
      },
      py::arg("x"), "256-bin histogram of a uint8 array.");

  m.def(
      "otsu_index",
      [](py::array_t<int64_t, py::array::c_style | py::array::forcecast> hist,
         py::array_t<double, py::array::c_style | py::array::forcecast> centers) {
        if (hist.ndim() != 1 || centers.ndim() != 1 || hist.size() != centers.size())
          throw py::value_error("hist and centers must be 1-D arrays of the same length");
        return ht::otsu_index(hist.data(), centers.data(), static_cast<int>(hist.size()));
      },
      py::arg("hist"), py::arg("centers"),
      "Otsu's split: bins above the returned index are foreground (-1 if undefined).");

  m.def(
      "dilate_disk",
      [](const py::array& mask, int radius) {
        auto a = require_u8(mask, 2, "mask");
        auto out = new_mask(a.shape(0), a.shape(1));
        {
          py::gil_scoped_release release;
          ht::dilate_disk(a.data(), a.shape(0), a.shape(1), radius, out.mutable_data());
        }
        return out;
      },
      py::arg("mask"), py::arg("radius"), "Binary dilation with a disk (outside = background).");

  m.def(
      "erode_disk",
      [](const py::array& mask, int radius) {
        auto a = require_u8(mask, 2, "mask");
        auto out = new_mask(a.shape(0), a.shape(1));
        {
          py::gil_scoped_release release;
          ht::erode_disk(a.data(), a.shape(0), a.shape(1), radius, out.mutable_data());
        }
        return out;
      },
      py::arg("mask"), py::arg("radius"), "Binary erosion with a disk (outside = foreground).");

  m.def(
      "label",
      [](const py::array& mask, int connectivity) {
        auto a = require_u8(mask, 2, "mask");
        py::array_t<int32_t> labels({a.shape(0), a.shape(1)});
        ht::Components comps;
        {
          py::gil_scoped_release release;
          comps = ht::label(a.data(), a.shape(0), a.shape(1), connectivity, labels.mutable_data());
        }
        py::array_t<int64_t> area(static_cast<py::ssize_t>(comps.area.size()));
        std::copy(comps.area.begin(), comps.area.end(), area.mutable_data());
        return py::make_tuple(labels, area);
      },
      py::arg("mask"), py::arg("connectivity") = 8,
      "Connected components: (labels int32 in raster order, area per label).");

  m.def(
      "fill_holes",
      [](const py::array& mask, int64_t max_area) {
        auto a = require_u8(mask, 2, "mask");
        auto out = new_mask(a.shape(0), a.shape(1));
        {
          py::gil_scoped_release release;
          ht::fill_holes(a.data(), a.shape(0), a.shape(1), max_area, out.mutable_data());
        }
        return out;
      },
      py::arg("mask"), py::arg("max_area") = -1,
      "Fill enclosed background regions of at most max_area pixels (-1: all).");

  m.def(
      "filter_components",
      [](const py::array& mask, int64_t min_area, int64_t keep_largest) {
        auto a = require_u8(mask, 2, "mask");
        auto out = new_mask(a.shape(0), a.shape(1));
        int64_t kept = 0;
        {
          py::gil_scoped_release release;
          kept = ht::filter_components(a.data(), a.shape(0), a.shape(1), min_area, keep_largest,
                                       out.mutable_data());
        }
        return py::make_tuple(out, kept);
      },
      py::arg("mask"), py::arg("min_area") = 0, py::arg("keep_largest") = 0,
      "Drop 8-connected components below min_area pixels; keep the largest k (0: all).");

  m.def(
      "integral_image",
      [](const py::array& mask) {
        auto a = require_u8(mask, 2, "mask");
        py::array_t<int64_t> ii({a.shape(0) + 1, a.shape(1) + 1});
        {
          py::gil_scoped_release release;
          ht::integral_image(a.data(), a.shape(0), a.shape(1), ii.mutable_data());
        }
        return ii;
      },
      py::arg("mask"), "Summed-area table (h+1) x (w+1) of a 0/1 mask.");

  m.def(
      "box_fractions",
      [](const py::array& mask,
         py::array_t<double, py::array::c_style | py::array::forcecast> boxes) {
        auto a = require_u8(mask, 2, "mask");
        if (boxes.ndim() != 2 || boxes.shape(1) != 4)
          throw py::value_error("boxes must have shape (n, 4): x0, y0, x1, y1");
        const int64_t h = a.shape(0), w = a.shape(1), n = boxes.shape(0);
        py::array_t<double> out(n);
        {
          py::gil_scoped_release release;
          std::vector<int64_t> ii(static_cast<size_t>((h + 1) * (w + 1)));
          ht::integral_image(a.data(), h, w, ii.data());
          ht::box_fractions(ii.data(), h, w, boxes.data(), n, out.mutable_data());
        }
        return out;
      },
      py::arg("mask"), py::arg("boxes"),
      "Exact fraction of each real-valued box (mask pixels) covered by the mask.");

  m.def(
      "tissue_mask",
      [](const py::array& image, int threshold, int min_threshold, int max_threshold,
         bool exclude_artefacts, int black_level, int green_margin, int closing_radius,
         int opening_radius, int64_t max_hole_area, int64_t min_area, int64_t keep_largest) {
        auto rgb = require_rgb(image);
        ht::Params p;
        p.threshold = threshold;
        p.min_threshold = min_threshold;
        p.max_threshold = max_threshold;
        p.exclude_artefacts = exclude_artefacts;
        p.black_level = black_level;
        p.green_margin = green_margin;
        p.closing_radius = closing_radius;
        p.opening_radius = opening_radius;
        p.max_hole_area = max_hole_area;
        p.min_area = min_area;
        p.keep_largest = keep_largest;
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        ht::Result res;
        {
          py::gil_scoped_release release;
          res = ht::tissue_mask(rgb.data(), rgb.shape(0), rgb.shape(1), p, out.mutable_data());
        }
        py::dict info;
        info["background"] = py::make_tuple(res.background[0], res.background[1], res.background[2]);
        info["otsu"] = res.otsu;
        info["threshold"] = res.threshold;
        info["components"] = res.components;
        return py::make_tuple(out, info);
      },
      py::arg("rgb"), py::arg("threshold") = -1, py::arg("min_threshold") = 3,
      py::arg("max_threshold") = 6, py::arg("exclude_artefacts") = true,
      py::arg("black_level") = 50, py::arg("green_margin") = 20, py::arg("closing_radius") = 3,
      py::arg("opening_radius") = 1, py::arg("max_hole_area") = -1, py::arg("min_area") = 0,
      py::arg("keep_largest") = 0,
      "Tissue mask of an RGB image (thresholds in OD x 100, sizes in pixels) and its stats.");
}
