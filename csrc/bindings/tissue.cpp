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

ht::MorphMethod to_method(const std::string& method) {
  if (method == "auto") return ht::MorphMethod::kAuto;
  if (method == "rows") return ht::MorphMethod::kRows;
  if (method == "distance") return ht::MorphMethod::kDistance;
  throw py::value_error("method must be 'auto', 'rows' or 'distance', got '" + method + "'");
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
      [](const py::array& image, std::array<int, 3> background, const py::object& skip,
         int64_t stride) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        const uint8_t* skip_ptr = nullptr;
        u8_array skip_arr;
        if (!skip.is_none()) {
          skip_arr = require_u8(py::cast<py::array>(skip), 2, "skip");
          if (skip_arr.shape(0) != rgb.shape(0) || skip_arr.shape(1) != rgb.shape(1))
            throw py::value_error("skip must have the image's height and width");
          skip_ptr = skip_arr.data();
        }
        std::array<int64_t, 256> hist{};
        {
          py::gil_scoped_release release;
          hist = ht::od_histogram(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, skip_ptr, stride);
        }
        py::array_t<int64_t> out(256);
        std::copy(hist.begin(), hist.end(), out.mutable_data());
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("skip") = py::none(), py::arg("stride") = 1,
      "Histogram of the quantised OD over every stride-th pixel, leaving out pixels where "
      "skip (height x width, uint8 or bool) is set.");

  m.def(
      "tissue_od_threshold",
      [](const py::array& image, std::array<int, 3> background, int t) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        {
          py::gil_scoped_release release;
          ht::od_threshold(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, t, out.mutable_data());
        }
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("t"),
      "Quantised OD > t as a 0/1 mask, straight from the RGB pixels.");

  m.def(
      "tissue_od_map",
      [](const py::array& image, std::array<int, 3> background) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        {
          py::gil_scoped_release release;
          ht::od_map(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, out.mutable_data());
        }
        return out;
      },
      py::arg("rgb"), py::arg("background"),
      "Quantised (x100) relative optical density of the most absorbing channel.");

  m.def(
      "tissue_artefacts",
      [](const py::array& image, std::array<int, 3> background, double black_od, double ink_od) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        {
          py::gil_scoped_release release;
          ht::artefact_map(rgb.data(), rgb.shape(0) * rgb.shape(1), bg, black_od, ink_od,
                           out.mutable_data());
        }
        return out;
      },
      py::arg("rgb"), py::arg("background"), py::arg("black_od"), py::arg("ink_od"),
      "Per pixel: 0 stain or glass, 1 black, 2 blue ink, 3 green ink, 4 red ink, 5 pale ink.");

  m.def(
      "tissue_artefact_mask",
      [](const py::array& image, std::array<int, 3> background, double black_od, double ink_od,
         int64_t ink_min_area, int spray, int margin) {
        auto rgb = require_rgb(image);
        const auto bg = to_background(background);
        auto out = new_mask(rgb.shape(0), rgb.shape(1));
        int64_t found = 0;
        {
          py::gil_scoped_release release;
          found = ht::artefact_mask(rgb.data(), rgb.shape(0), rgb.shape(1), bg, black_od, ink_od,
                                    ink_min_area, spray, margin, out.mutable_data());
        }
        return py::make_tuple(out, found);
      },
      py::arg("rgb"), py::arg("background"), py::arg("black_od"), py::arg("ink_od"),
      py::arg("ink_min_area"), py::arg("spray"), py::arg("margin"),
      "Artefact pixels to take out (0/1): ink-coloured regions holding at least ink_min_area "
      "dense ink pixels with the ink-coloured pixels within spray of them, and black regions of "
      "at least ink_min_area pixels, widened by a disk of radius margin; and how many were "
      "found before widening.");

  m.def(
      "squared_distance",
      [](const py::array& mask, bool target) {
        auto a = require_u8(mask, 2, "mask");
        py::array_t<int32_t> out({a.shape(0), a.shape(1)});
        {
          py::gil_scoped_release release;
          ht::squared_distance(a.data(), a.shape(0), a.shape(1), target, out.mutable_data());
        }
        return out;
      },
      py::arg("mask"), py::arg("target") = true,
      "Exact squared Euclidean distance to the nearest pixel that is set (target=True) or "
      "clear (target=False); 2**31 - 1 where there is none.");

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
      [](const py::array& mask, int radius, const std::string& method) {
        auto a = require_u8(mask, 2, "mask");
        const auto how = to_method(method);
        auto out = new_mask(a.shape(0), a.shape(1));
        {
          py::gil_scoped_release release;
          ht::dilate_disk(a.data(), a.shape(0), a.shape(1), radius, out.mutable_data(), how);
        }
        return out;
      },
      py::arg("mask"), py::arg("radius"), py::arg("method") = "auto", "Binary dilation with a disk (outside = background); method: auto, rows or distance.");

  m.def(
      "erode_disk",
      [](const py::array& mask, int radius, const std::string& method) {
        auto a = require_u8(mask, 2, "mask");
        const auto how = to_method(method);
        auto out = new_mask(a.shape(0), a.shape(1));
        {
          py::gil_scoped_release release;
          ht::erode_disk(a.data(), a.shape(0), a.shape(1), radius, out.mutable_data(), how);
        }
        return out;
      },
      py::arg("mask"), py::arg("radius"), py::arg("method") = "auto", "Binary erosion with a disk (outside = foreground); method: auto, rows or distance.");

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
        py::array_t<int64_t> boxes({static_cast<py::ssize_t>(comps.area.size()), py::ssize_t{4}});
        std::copy(comps.box.begin(), comps.box.end(), boxes.mutable_data());
        return py::make_tuple(labels, area, boxes);
      },
      py::arg("mask"), py::arg("connectivity") = 8,
      "Connected components: (labels int32 in raster order, area per label, box per label as "
      "x0, y0, x1, y1 with exclusive ends).");

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
      [](const py::array& mask, int64_t min_area, int64_t keep_largest, double thin_width,
         int64_t thin_length) {
        auto a = require_u8(mask, 2, "mask");
        auto out = new_mask(a.shape(0), a.shape(1));
        int64_t kept = 0;
        {
          py::gil_scoped_release release;
          kept = ht::filter_components(a.data(), a.shape(0), a.shape(1), min_area, keep_largest,
                                       out.mutable_data(), thin_width, thin_length);
        }
        return py::make_tuple(out, kept);
      },
      py::arg("mask"), py::arg("min_area") = 0, py::arg("keep_largest") = 0,
      py::arg("thin_width") = 0.0, py::arg("thin_length") = 0,
      "Drop 8-connected components below min_area pixels, and (thin_length > 0) those at "
      "least thin_length long and on average at most thin_width wide; keep the largest k "
      "(0: all).");

  m.def(
      "straight_lines",
      [](const py::array& mask, int half_width, int64_t length) {
        auto a = require_u8(mask, 2, "mask");
        if (half_width < 1) throw py::value_error("half_width must be >= 1");
        auto out = new_mask(a.shape(0), a.shape(1));
        int64_t found = 0;
        {
          py::gil_scoped_release release;
          found = ht::straight_lines(a.data(), a.shape(0), a.shape(1), half_width, length,
                                     out.mutable_data());
        }
        return py::make_tuple(out, found);
      },
      py::arg("mask"), py::arg("half_width"), py::arg("length"),
      "Pixels of straight runs along rows or columns, at least length long, with glass "
      "2r+1 to 3r+2 pixels away on both sides (coverslip and slide edges); and how many.");

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
}
