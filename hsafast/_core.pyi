"""Type stub of hsafast's native core (built from csrc/bindings; kept in step by hand).

Functions under "CUDA builds only" exist when the extension was compiled with HSAFAST_CUDA=ON.
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "STAIN_STAT_COUNT",
    "TileDecodeError",
    "box_fractions",
    "build_info",
    "cells_blur",
    "cells_detect",
    "cells_erode",
    "cells_peak_candidates",
    "cells_simd_paths",
    "dilate_disk",
    "erode_disk",
    "fill_holes",
    "filter_components",
    "gated_logits",
    "get_num_threads",
    "integral_image",
    "jpeg_decode",
    "jpeg_decoder_version",
    "jpeg_read_regions",
    "label",
    "merge_pool_states",
    "otsu_index",
    "pool_chunk",
    "sample_stride",
    "set_num_threads",
    "set_simd",
    "squared_distance",
    "stain_concentrations",
    "stain_tile_stats",
    "straight_lines",
    "tissue_artefact_mask",
    "tissue_artefacts",
    "tissue_background",
    "tissue_histogram",
    "tissue_od_histogram",
    "tissue_od_map",
    "tissue_od_threshold",
]

class TileDecodeError(RuntimeError): ...

def box_fractions(
    mask: numpy.ndarray, boxes: numpy.typing.ArrayLike
) -> numpy.typing.NDArray[numpy.float64]: ...
def build_info() -> dict: ...
def cells_blur(
    image: numpy.typing.ArrayLike, sigma: float, simd: str = "auto"
) -> numpy.typing.NDArray[numpy.float32]: ...
def cells_detect(
    tiles: numpy.ndarray,
    od_lut: numpy.typing.ArrayLike,
    inv: numpy.typing.ArrayLike,
    hema: int,
    dab: int,
    membranous: bool,
    detect_sigma: float,
    shape_sigma: float,
    peak_window: int,
    background_diameter: int,
    mean_radius: float,
    radius: float,
    reach: float,
    min_od: float,
    min_contrast: float,
    mask_min: float,
    thresholds: collections.abc.Sequence[float],
    mpp: float,
    min_area_um2: float,
    min_width_um: float,
    min_fill: float,
    min_neighbours: int,
    neighbour_px: float,
    min_group_share: float,
    group_px: float,
    ring_px: float,
    ring_coverage: float,
    simd: str = "auto",
) -> tuple[
    numpy.typing.NDArray[numpy.int64],
    numpy.typing.NDArray[numpy.float64],
    numpy.typing.NDArray[numpy.float64],
    numpy.typing.NDArray[numpy.int8],
    numpy.typing.NDArray[numpy.float64],
    numpy.typing.NDArray[numpy.float64],
    numpy.typing.NDArray[numpy.float64],
    numpy.typing.NDArray[numpy.bool_],
]: ...
def cells_erode(
    image: numpy.typing.ArrayLike, diameter: int, simd: str = "auto"
) -> numpy.typing.NDArray[numpy.float32]: ...
def cells_peak_candidates(
    image: numpy.typing.ArrayLike, min_value: float, simd: str = "auto"
) -> numpy.typing.NDArray[numpy.uint8]: ...
def cells_simd_paths() -> list[str]: ...
def dilate_disk(
    mask: numpy.ndarray, radius: int, method: str = "auto"
) -> numpy.typing.NDArray[numpy.uint8]: ...
def erode_disk(
    mask: numpy.ndarray, radius: int, method: str = "auto"
) -> numpy.typing.NDArray[numpy.uint8]: ...
def fill_holes(mask: numpy.ndarray, max_area: int = -1) -> numpy.typing.NDArray[numpy.uint8]: ...
def filter_components(
    mask: numpy.ndarray,
    min_area: int = 0,
    keep_largest: int = 0,
    thin_width: float = 0.0,
    thin_length: int = 0,
) -> tuple[numpy.typing.NDArray[numpy.uint8], int]: ...
def gated_logits(
    z: numpy.ndarray, bias_v: numpy.ndarray, bias_u: numpy.ndarray, w: numpy.ndarray, bias_w: float
) -> numpy.typing.NDArray[numpy.float32]: ...
def get_num_threads() -> int: ...
def integral_image(mask: numpy.ndarray) -> numpy.typing.NDArray[numpy.int64]: ...
def jpeg_decode(
    data: bytes, tables: typing.Any = None, rgb: bool = False, reduce: int = 1
) -> numpy.typing.NDArray[numpy.uint8]: ...
def jpeg_decoder_version() -> str: ...
def jpeg_read_regions(
    fd: int,
    offsets: numpy.ndarray,
    bytecounts: numpy.ndarray,
    tiles_across: int,
    tiles_down: int,
    tile_width: int,
    tile_height: int,
    width: int,
    height: int,
    tables: typing.Any,
    rgb: bool,
    xy: numpy.ndarray,
    out: numpy.ndarray,
    reduce: int = 1,
    threads: int = 1,
) -> None: ...
def label(
    mask: numpy.ndarray, connectivity: int = 8
) -> tuple[
    numpy.typing.NDArray[numpy.int32],
    numpy.typing.NDArray[numpy.int64],
    numpy.typing.NDArray[numpy.int64],
]: ...
def merge_pool_states(a: numpy.ndarray, b: numpy.ndarray) -> None: ...
def otsu_index(hist: numpy.typing.ArrayLike, centers: numpy.typing.ArrayLike) -> int: ...
def pool_chunk(
    z: numpy.ndarray,
    h: numpy.ndarray,
    bias_v: numpy.ndarray,
    bias_u: numpy.ndarray,
    w: numpy.ndarray,
    bias_w: float,
    state: numpy.ndarray,
    logits: typing.Any = None,
) -> bool: ...
def sample_stride(n_pixels: int) -> int: ...
def set_num_threads(n: int) -> None: ...
def set_simd(path: str | None) -> str: ...
def squared_distance(
    mask: numpy.ndarray, target: bool = True
) -> numpy.typing.NDArray[numpy.int32]: ...
def stain_concentrations(
    rgb: numpy.ndarray,
    od_lut: numpy.typing.ArrayLike,
    inv: numpy.typing.ArrayLike,
    clamp: bool = True,
) -> numpy.typing.NDArray[numpy.float32]: ...
def stain_tile_stats(
    tiles: numpy.ndarray,
    od_lut: numpy.typing.ArrayLike,
    inv: numpy.typing.ArrayLike,
    dab: int,
    hema: int,
    dab_thresholds: collections.abc.Sequence[float],
    hema_threshold: float,
    tissue_od: float,
    saturation_level: int,
) -> numpy.typing.NDArray[numpy.float64]: ...
def straight_lines(
    mask: numpy.ndarray, half_width: int, length: int
) -> tuple[numpy.typing.NDArray[numpy.uint8], int]: ...
def tissue_artefact_mask(
    rgb: numpy.ndarray,
    background: collections.abc.Sequence[int],
    black_od: float,
    ink_od: float,
    ink_min_area: int,
    spray: int,
    margin: int,
) -> tuple[numpy.typing.NDArray[numpy.uint8], int]: ...
def tissue_artefacts(
    rgb: numpy.ndarray,
    background: collections.abc.Sequence[int],
    black_od: float,
    ink_od: float,
) -> numpy.typing.NDArray[numpy.uint8]: ...
def tissue_background(
    rgb: numpy.ndarray, stride: int = 1, percentile: float = 99.0, floor: int = 200
) -> tuple[int, int, int]: ...
def tissue_histogram(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.int64]: ...
def tissue_od_histogram(
    rgb: numpy.ndarray,
    background: collections.abc.Sequence[int],
    skip: numpy.ndarray | None = None,
    stride: int = 1,
) -> numpy.typing.NDArray[numpy.int64]: ...
def tissue_od_map(
    rgb: numpy.ndarray, background: collections.abc.Sequence[int]
) -> numpy.typing.NDArray[numpy.uint8]: ...
def tissue_od_threshold(
    rgb: numpy.ndarray, background: collections.abc.Sequence[int], t: int
) -> numpy.typing.NDArray[numpy.uint8]: ...

STAIN_STAT_COUNT: int = 9

# CUDA builds only
def pool_cuda_workspace_bytes(n: int, dim: int, hidden: int) -> int: ...
def pool_cuda(
    h: int,
    ldh: int,
    dtype: int,
    n: int,
    dim: int,
    weights: int,
    bias_v: int,
    bias_u: int,
    w: int,
    bias_w: float,
    hidden: int,
    workspace: int,
    workspace_bytes: int,
    logits: int,
    state: int,
    stream: int,
    z: int = 0,
    ldz: int = 0,
    epilogue: int = 1,
    pooled: int = 0,
    weights_out: int = 0,
    status: int = 0,
) -> None: ...
