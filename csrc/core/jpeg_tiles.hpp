// Batched reading of regions from JPEG-tiled pyramid levels (TIFF, SVS).
//
// The caller (Python, from tifffile's directory parse) gives the byte offsets of
// the compressed tiles of one level and the JPEGTables; this module reads the
// bytes with pread, decodes each tile once with libjpeg-turbo on N threads and
// writes the pixels straight into the output batch. Regions need not be aligned
// to the file's tiles; areas outside the level (or in missing tiles) are white.
//
// Decoding follows OpenSlide's choices so that pixels are identical: the JPEG
// colour space comes from the TIFF photometric tag (Aperio stores RGB JPEGs),
// the integer IDCT and fancy upsampling are libjpeg's defaults, and libjpeg
// warnings (corrupt data) are fatal.
//
// The decoder can also decode at 1/2, 1/4 or 1/8 scale in the DCT domain
// (libjpeg's scaled IDCT), for targets coarser than the level read.
//
// Built only when CMake finds libjpeg-turbo (HSAFAST_WITH_JPEG); otherwise
// jpeg_decoder_available() is false and Python falls back to imagecodecs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace hsafast {

// Where the compressed tiles of one pyramid level lie in an open file.
struct JpegTiledLevel {
  int fd = -1;
  const uint64_t* offsets = nullptr;     // tiles_down x tiles_across, row-major
  const uint64_t* bytecounts = nullptr;  // 0 marks a missing (white) tile
  int64_t tiles_across = 0;
  int64_t tiles_down = 0;
  int32_t tile_width = 0;
  int32_t tile_height = 0;
  int64_t width = 0;  // level size in pixels
  int64_t height = 0;
  const uint8_t* tables = nullptr;  // JPEGTables stream, or nullptr
  size_t tables_size = 0;
  bool rgb = false;  // the JPEG holds RGB samples (TIFF photometric RGB), not YCbCr
};

// A tile that could not be read or decoded; col/row name it in the level's grid.
class TileDecodeError : public std::runtime_error {
 public:
  TileDecodeError(int64_t col, int64_t row, const std::string& what)
      : std::runtime_error(what), col(col), row(row) {}
  int64_t col;
  int64_t row;
};

// True when this build has the libjpeg-turbo decoder; version() names it.
bool jpeg_decoder_available();
std::string jpeg_decoder_version();

// Read n regions of out_w x out_h pixels into out (n x out_h x out_w x 3, RGB).
// xy holds the regions' top-left corners (n x 2, x then y) in pixels of the
// level at full scale; with reduce = 2, 4 or 8 every tile is decoded at 1/reduce
// scale and a region covers out_w*reduce x out_h*reduce level pixels from
// (floor(x/reduce), floor(y/reduce)) in the reduced level. Uses up to
// `threads` workers (capped by hsafast::get_num_threads()). Throws
// TileDecodeError for an unreadable or corrupt tile, std::invalid_argument for
// bad geometry.
void read_jpeg_regions(const JpegTiledLevel& level, const int64_t* xy, int64_t n, int32_t out_w,
                       int32_t out_h, int reduce, uint8_t* out, int threads);

// Decode one JPEG stream (with optional tables) into out (h x w x 3). The
// stream's size at 1/reduce scale must be w x h (query it with jpeg_dimensions).
void decode_jpeg(const uint8_t* data, size_t size, const uint8_t* tables, size_t tables_size,
                 bool rgb, int reduce, uint8_t* out, int32_t w, int32_t h);

// Size (width, height) of a JPEG stream decoded at 1/reduce scale.
void jpeg_dimensions(const uint8_t* data, size_t size, const uint8_t* tables, size_t tables_size,
                     int reduce, int32_t* w, int32_t* h);

}  // namespace hsafast
