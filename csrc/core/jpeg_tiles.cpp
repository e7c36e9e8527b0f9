#include "core/jpeg_tiles.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/parallel.hpp"

#ifdef HSAFAST_WITH_JPEG
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
extern "C" {
#include <jpeglib.h>
}
#endif

namespace hsafast {

#ifdef HSAFAST_WITH_JPEG

namespace {

constexpr uint64_t kMaxTileBytes = uint64_t{1} << 28;  // 256 MiB: anything larger is corrupt

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg sees only this part
  std::jmp_buf env;
  char message[JMSG_LENGTH_MAX];
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->env, 1);
}

// libjpeg reports corrupt entropy data as warnings and fills in grey; treat
// them as errors so that a damaged tile is never returned as pixels.
void on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) on_error(cinfo);
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One libjpeg decompressor, reused for every tile a worker decodes.
//
// Functions that call setjmp keep only trivially destructible locals, so a
// longjmp from libjpeg skips no destructor.
class Decoder {
 public:
  Decoder() {
    std::memset(&err_, 0, sizeof(err_));
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = on_error;
    err_.pub.emit_message = on_message;
    if (setjmp(err_.env)) throw std::runtime_error(err_.message);
    jpeg_create_decompress(&cinfo_);
  }
  ~Decoder() { jpeg_destroy_decompress(&cinfo_); }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Read the header (after loading tables) and set the output parameters.
  // Returns nullptr or an error message.
  const char* header(const uint8_t* data, size_t size, const uint8_t* tables, size_t tables_size,
                     bool rgb, int reduce, int32_t* w, int32_t* h) {
    if (setjmp(err_.env)) {
      jpeg_abort_decompress(&cinfo_);
      return err_.message;
    }
    if (size == 0) return "tile holds no data";
    if (tables != nullptr && tables_size > 0) {
      jpeg_mem_src(&cinfo_, const_cast<unsigned char*>(tables),
                   static_cast<unsigned long>(tables_size));
      if (jpeg_read_header(&cinfo_, FALSE) != JPEG_HEADER_TABLES_ONLY) {
        jpeg_abort_decompress(&cinfo_);
        return "JPEGTables is not a table-only JPEG stream";
      }
    }
    jpeg_mem_src(&cinfo_, const_cast<unsigned char*>(data), static_cast<unsigned long>(size));
    if (jpeg_read_header(&cinfo_, TRUE) != JPEG_HEADER_OK) {
      jpeg_abort_decompress(&cinfo_);
      return "no image in the JPEG stream";
    }
    if (cinfo_.num_components != 3) {
      jpeg_abort_decompress(&cinfo_);
      return "expected a 3-component (colour) JPEG";
    }
    cinfo_.jpeg_color_space = rgb ? JCS_RGB : JCS_YCbCr;
    cinfo_.out_color_space = JCS_RGB;
    cinfo_.scale_num = 1;
    cinfo_.scale_denom = static_cast<unsigned int>(reduce);
    jpeg_calc_output_dimensions(&cinfo_);
    *w = static_cast<int32_t>(cinfo_.output_width);
    *h = static_cast<int32_t>(cinfo_.output_height);
    return nullptr;
  }

  // Decode every row after header(); row_ptr(y) gives each row's destination.
  // The whole tile is always decoded (rows nobody needs go to scratch) so that
  // damage anywhere in it is an error, as in OpenSlide; libjpeg cannot skip
  // rows without skipping their entropy data. The stream must decode to exactly
  // expect_w x expect_h.
  template <typename RowPtr>
  const char* decode(int32_t expect_w, int32_t expect_h, RowPtr&& row_ptr) {
    if (setjmp(err_.env)) {
      jpeg_abort_decompress(&cinfo_);
      return err_.message;
    }
    if (static_cast<int32_t>(cinfo_.output_width) != expect_w ||
        static_cast<int32_t>(cinfo_.output_height) != expect_h) {
      std::snprintf(err_.message, sizeof(err_.message), "tile decodes to %ux%u, expected %dx%d",
                    cinfo_.output_width, cinfo_.output_height, expect_w, expect_h);
      jpeg_abort_decompress(&cinfo_);
      return err_.message;
    }
    jpeg_start_decompress(&cinfo_);
    JSAMPROW ptrs[16];
    const auto rows = static_cast<int32_t>(cinfo_.output_height);
    while (static_cast<int32_t>(cinfo_.output_scanline) < rows) {
      const int32_t y = static_cast<int32_t>(cinfo_.output_scanline);
      const int32_t k = std::min<int32_t>(16, rows - y);
      for (int32_t j = 0; j < k; ++j) ptrs[j] = row_ptr(y + j);
      jpeg_read_scanlines(&cinfo_, ptrs, static_cast<JDIMENSION>(k));
    }
    jpeg_finish_decompress(&cinfo_);
    return nullptr;
  }

 private:
  jpeg_decompress_struct cinfo_{};
  ErrorManager err_;
};

// One part of one output region that a tile supplies (reduced-scale pixels).
struct Use {
  int64_t tile;
  int64_t region;
  int32_t src_x, src_y;  // in the tile
  int32_t dst_x, dst_y;  // in the region
  int32_t w, h;
};

void read_tile_bytes(int fd, uint64_t offset, uint64_t count, std::vector<uint8_t>& buf,
                     int64_t col, int64_t row) {
  if (count > kMaxTileBytes) {
    throw TileDecodeError(col, row,
                          "implausible tile byte count " + std::to_string(count) + " (corrupt)");
  }
  buf.resize(count);
  uint64_t got = 0;
  while (got < count) {
    const ssize_t r = ::pread(fd, buf.data() + got, count - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw TileDecodeError(col, row, std::string("cannot read tile data: ") + std::strerror(errno));
    }
    if (r == 0) {
      throw TileDecodeError(col, row,
                            "file ends inside the tile's data (offset " + std::to_string(offset) +
                                ", " + std::to_string(count) + " bytes): truncated file");
    }
    got += static_cast<uint64_t>(r);
  }
}

}  // namespace

bool jpeg_decoder_available() { return true; }

std::string jpeg_decoder_version() {
#ifdef LIBJPEG_TURBO_VERSION
#define HSAFAST_STR2(x) #x
#define HSAFAST_STR(x) HSAFAST_STR2(x)
  return std::string("libjpeg-turbo ") + HSAFAST_STR(LIBJPEG_TURBO_VERSION);
#else
  return "libjpeg " + std::to_string(JPEG_LIB_VERSION);
#endif
}

void jpeg_dimensions(const uint8_t* data, size_t size, const uint8_t* tables, size_t tables_size,
                     int reduce, int32_t* w, int32_t* h) {
  Decoder dec;
  if (const char* msg = dec.header(data, size, tables, tables_size, false, reduce, w, h)) {
    throw TileDecodeError(0, 0, msg);
  }
}

void decode_jpeg(const uint8_t* data, size_t size, const uint8_t* tables, size_t tables_size,
                 bool rgb, int reduce, uint8_t* out, int32_t w, int32_t h) {
  if (reduce != 1 && reduce != 2 && reduce != 4 && reduce != 8) {
    throw std::invalid_argument("reduce must be 1, 2, 4 or 8");
  }
  Decoder dec;
  int32_t dw = 0, dh = 0;
  const char* msg = dec.header(data, size, tables, tables_size, rgb, reduce, &dw, &dh);
  if (msg == nullptr) {
    msg = dec.decode(w, h, [&](int32_t y) { return out + static_cast<size_t>(y) * w * 3; });
  }
  if (msg != nullptr) throw TileDecodeError(0, 0, msg);
}

void read_jpeg_regions(const JpegTiledLevel& level, const int64_t* xy, int64_t n, int32_t out_w,
                       int32_t out_h, int reduce, uint8_t* out, int threads) {
  if (reduce != 1 && reduce != 2 && reduce != 4 && reduce != 8) {
    throw std::invalid_argument("reduce must be 1, 2, 4 or 8");
  }
  if (out_w <= 0 || out_h <= 0) throw std::invalid_argument("region size must be positive");
  if (level.tile_width <= 0 || level.tile_height <= 0 || level.tile_width % reduce != 0 ||
      level.tile_height % reduce != 0) {
    throw std::invalid_argument("tile size must be positive and divisible by reduce");
  }
  if (level.tiles_across * level.tile_width < level.width ||
      level.tiles_down * level.tile_height < level.height) {
    throw std::invalid_argument("the tiles do not cover the level");
  }
  const int64_t tw = level.tile_width / reduce;
  const int64_t th = level.tile_height / reduce;
  const int64_t W = ceil_div(level.width, reduce);
  const int64_t H = ceil_div(level.height, reduce);
  const size_t region_bytes = static_cast<size_t>(out_w) * out_h * 3;

  // Plan: which parts of which regions each tile supplies.
  std::vector<Use> uses;
  uses.reserve(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t X = floor_div(xy[2 * i], reduce);
    const int64_t Y = floor_div(xy[2 * i + 1], reduce);
    const int64_t x0 = std::max<int64_t>(X, 0), x1 = std::min<int64_t>(X + out_w, W);
    const int64_t y0 = std::max<int64_t>(Y, 0), y1 = std::min<int64_t>(Y + out_h, H);
    bool white = !(x0 == X && y0 == Y && x1 == X + out_w && y1 == Y + out_h);
    if (x1 > x0 && y1 > y0) {
      for (int64_t ty = y0 / th; ty <= (y1 - 1) / th; ++ty) {
        for (int64_t tx = x0 / tw; tx <= (x1 - 1) / tw; ++tx) {
          const int64_t t = ty * level.tiles_across + tx;
          if (level.bytecounts[t] == 0) {
            white = true;
            continue;
          }
          const int64_t sx0 = std::max(x0, tx * tw), sx1 = std::min(x1, (tx + 1) * tw);
          const int64_t sy0 = std::max(y0, ty * th), sy1 = std::min(y1, (ty + 1) * th);
          uses.push_back(Use{t, i, static_cast<int32_t>(sx0 - tx * tw),
                             static_cast<int32_t>(sy0 - ty * th), static_cast<int32_t>(sx0 - X),
                             static_cast<int32_t>(sy0 - Y), static_cast<int32_t>(sx1 - sx0),
                             static_cast<int32_t>(sy1 - sy0)});
        }
      }
    }
    if (white) std::memset(out + static_cast<size_t>(i) * region_bytes, 255, region_bytes);
  }
  std::stable_sort(uses.begin(), uses.end(),
                   [](const Use& a, const Use& b) { return a.tile < b.tile; });
  std::vector<std::pair<size_t, size_t>> groups;  // [begin, end) of each tile's uses
  for (size_t b = 0; b < uses.size();) {
    size_t e = b + 1;
    while (e < uses.size() && uses[e].tile == uses[b].tile) ++e;
    groups.emplace_back(b, e);
    b = e;
  }
  if (groups.empty()) return;

  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_lock;
  std::exception_ptr error;

  auto worker = [&]() {
    Decoder dec;
    std::vector<uint8_t> data;
    std::vector<uint8_t> scratch(static_cast<size_t>(tw) * th * 3);
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t g = next.fetch_add(1);
      if (g >= groups.size()) break;
      const Use* first = &uses[groups[g].first];
      const size_t count = groups[g].second - groups[g].first;
      const int64_t t = first->tile;
      const int64_t col = t % level.tiles_across, row = t / level.tiles_across;
      try {
        read_tile_bytes(level.fd, level.offsets[t], level.bytecounts[t], data, col, row);
        int32_t dw = 0, dh = 0;
        const char* msg = dec.header(data.data(), data.size(), level.tables, level.tables_size,
                                     level.rgb, reduce, &dw, &dh);
        if (msg == nullptr && count == 1 && first->src_x == 0 && first->w == tw) {
          // The tile's rows land whole in one region: decode straight into it.
          uint8_t* base = out + static_cast<size_t>(first->region) * region_bytes;
          const Use u = *first;
          msg = dec.decode(static_cast<int32_t>(tw), static_cast<int32_t>(th), [&](int32_t y) {
            if (y < u.src_y || y >= u.src_y + u.h) return scratch.data();
            return base + (static_cast<size_t>(u.dst_y + y - u.src_y) * out_w + u.dst_x) * 3;
          });
        } else if (msg == nullptr) {
          const size_t stride = static_cast<size_t>(tw) * 3;
          msg = dec.decode(static_cast<int32_t>(tw), static_cast<int32_t>(th),
                           [&](int32_t y) { return scratch.data() + y * stride; });
          if (msg == nullptr) {
            for (size_t k = 0; k < count; ++k) {
              const Use& u = first[k];
              uint8_t* base = out + static_cast<size_t>(u.region) * region_bytes;
              for (int32_t y = 0; y < u.h; ++y) {
                std::memcpy(base + (static_cast<size_t>(u.dst_y + y) * out_w + u.dst_x) * 3,
                            scratch.data() + (u.src_y + y) * stride + u.src_x * 3,
                            static_cast<size_t>(u.w) * 3);
              }
            }
          }
        }
        if (msg != nullptr) throw TileDecodeError(col, row, msg);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_lock);
        if (!error) error = std::current_exception();
        failed.store(true);
      }
    }
  };

  const int64_t workers =
      std::max<int64_t>(1, std::min<int64_t>(threads, static_cast<int64_t>(groups.size())));
  parallel_for(workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) worker();
  });
  if (error) std::rethrow_exception(error);
}

#else  // built without libjpeg

bool jpeg_decoder_available() { return false; }
std::string jpeg_decoder_version() { return ""; }

namespace {
[[noreturn]] void no_decoder() {
  throw std::runtime_error("hsafast was built without libjpeg-turbo; the native decoder is off");
}
}  // namespace

void jpeg_dimensions(const uint8_t*, size_t, const uint8_t*, size_t, int, int32_t*, int32_t*) {
  no_decoder();
}
void decode_jpeg(const uint8_t*, size_t, const uint8_t*, size_t, bool, int, uint8_t*, int32_t,
                 int32_t) {
  no_decoder();
}
void read_jpeg_regions(const JpegTiledLevel&, const int64_t*, int64_t, int32_t, int32_t, int,
                       uint8_t*, int) {
  no_decoder();
}

#endif

}  // namespace hsafast
