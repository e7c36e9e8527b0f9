// Bindings for tile reading: the batched JPEG tile decoder.
#include <pybind11/numpy.h>
#include <pybind11/gil_safe_call_once.h>
#include <pybind11/pybind11.h>

#include <string>

#include "core/jpeg_tiles.hpp"

namespace py = pybind11;

namespace {

// A C-contiguous array of exactly type T, or a TypeError naming the argument.
template <typename T>
T* checked_data(py::array& a, const char* name, bool writable = false) {
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + ": expected dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::type_error(std::string(name) + ": array must be C-contiguous");
  }
  if (writable && !a.writeable()) throw py::type_error(std::string(name) + ": array is read-only");
  return static_cast<T*>(a.mutable_data());
}

// (pointer, size) of an optional bytes object; the caller keeps it alive.
std::pair<const uint8_t*, size_t> bytes_view(const py::object& obj) {
  if (obj.is_none()) return {nullptr, 0};
  char* ptr = nullptr;
  Py_ssize_t len = 0;
  if (PyBytes_AsStringAndSize(obj.ptr(), &ptr, &len) != 0) throw py::error_already_set();
  return {reinterpret_cast<const uint8_t*>(ptr), static_cast<size_t>(len)};
}

}  // namespace

void init_io(py::module_& m) {
  // Stored once per interpreter, as pybind11 recommends for exception types.
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> tile_error;
  tile_error.call_once_and_store_result([&]() {
    py::object exc = py::exception<hsafast::TileDecodeError>(m, "TileDecodeError",
                                                             PyExc_RuntimeError);
    exc.attr("__doc__") = "A tile could not be read or decoded; args are (message, column, row).";
    return exc;
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const hsafast::TileDecodeError& e) {
      py::tuple args = py::make_tuple(std::string(e.what()), e.col, e.row);
      PyErr_SetObject(tile_error.get_stored().ptr(), args.ptr());
    }
  });

  m.def("jpeg_decoder_version", &hsafast::jpeg_decoder_version,
        "The libjpeg-turbo version the tile decoder was built with ('' when built without).");

  m.def(
      "jpeg_read_regions",
      [](int fd, py::array offsets, py::array bytecounts, int64_t tiles_across, int64_t tiles_down,
         int32_t tile_width, int32_t tile_height, int64_t width, int64_t height,
         const py::object& tables, bool rgb, py::array xy, py::array out, int reduce,
         int threads) {
        const uint64_t* off = checked_data<uint64_t>(offsets, "offsets");
        const uint64_t* cnt = checked_data<uint64_t>(bytecounts, "bytecounts");
        const int64_t ntiles = tiles_across * tiles_down;
        if (offsets.size() != ntiles || bytecounts.size() != ntiles) {
          throw py::value_error("offsets and bytecounts must hold tiles_across * tiles_down items");
        }
        const int64_t* pxy = checked_data<int64_t>(xy, "xy");
        if (xy.ndim() != 2 || xy.shape(1) != 2) throw py::value_error("xy must be N x 2");
        uint8_t* pout = checked_data<uint8_t>(out, "out", true);
        if (out.ndim() != 4 || out.shape(0) != xy.shape(0) || out.shape(3) != 3) {
          throw py::value_error("out must be N x H x W x 3 with N = len(xy)");
        }
        auto [tab, tab_size] = bytes_view(tables);
        hsafast::JpegTiledLevel level;
        level.fd = fd;
        level.offsets = off;
        level.bytecounts = cnt;
        level.tiles_across = tiles_across;
        level.tiles_down = tiles_down;
        level.tile_width = tile_width;
        level.tile_height = tile_height;
        level.width = width;
        level.height = height;
        level.tables = tab;
        level.tables_size = tab_size;
        level.rgb = rgb;
        const auto n = static_cast<int64_t>(xy.shape(0));
        const auto h = static_cast<int32_t>(out.shape(1));
        const auto w = static_cast<int32_t>(out.shape(2));
        try {
          py::gil_scoped_release release;
          hsafast::read_jpeg_regions(level, pxy, n, w, h, reduce, pout, threads);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("fd"), py::arg("offsets"), py::arg("bytecounts"), py::arg("tiles_across"),
      py::arg("tiles_down"), py::arg("tile_width"), py::arg("tile_height"), py::arg("width"),
      py::arg("height"), py::arg("tables"), py::arg("rgb"), py::arg("xy"), py::arg("out"),
      py::arg("reduce") = 1, py::arg("threads") = 1,
      "Read N regions of a JPEG-tiled level into out (N x H x W x 3 uint8).\n\n"
      "xy holds level-pixel top-left corners (N x 2 int64); tiles are read from the open\n"
      "file descriptor fd at offsets/bytecounts (uint64, row-major tile grid) and decoded\n"
      "once each, at 1/reduce scale in the DCT domain when reduce is 2, 4 or 8. Areas\n"
      "outside the level are white. Raises TileDecodeError naming the tile.");

  m.def(
      "jpeg_decode",
      [](const py::bytes& data, const py::object& tables, bool rgb, int reduce) {
        auto [ptr, size] = bytes_view(data);
        auto [tab, tab_size] = bytes_view(tables);
        int32_t w = 0, h = 0;
        {
          py::gil_scoped_release release;
          hsafast::jpeg_dimensions(ptr, size, tab, tab_size, reduce, &w, &h);
        }
        py::array_t<uint8_t> out({static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w),
                                  static_cast<py::ssize_t>(3)});
        uint8_t* pout = out.mutable_data();
        try {
          py::gil_scoped_release release;
          hsafast::decode_jpeg(ptr, size, tab, tab_size, rgb, reduce, pout, w, h);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        return out;
      },
      py::arg("data"), py::arg("tables") = py::none(), py::arg("rgb") = false,
      py::arg("reduce") = 1,
      "Decode one 3-component JPEG stream (with optional JPEGTables) to H x W x 3 RGB,\n"
      "at 1/reduce scale. rgb=True treats the samples as RGB (TIFF photometric RGB).");
}
