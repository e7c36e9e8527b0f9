"""GPU scoring paths against the CPU reference on the same inputs (skipped without a GPU).

Tolerances: bf16 keeps 8 bits of mantissa (relative steps of 2^-8 = 0.4%), and a small
network accumulates a few of them, so bf16 outputs are compared at 3% of the largest value;
float32 on the GPU (TF32 convolutions by default in cuDNN) at 0.5%. Decoded pixels: nvImageCodec
and libjpeg-turbo implement the IDCT and chroma upsampling differently (at most 1 grey level
apart on WSI tiles, measured on an H200).
"""

from __future__ import annotations

import numpy as np
import pytest
from pooling_helpers import assert_close
from scoring_helpers import random_bundle, random_tiles

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "cnn"
    random_bundle(path, encoder="hsafast-cnn-s", tile_size=256, target_mpp=0.5)
    return path


@pytest.fixture(scope="module")
def model(bundle_dir):
    from hsafast.scoring.model import load_model

    return load_model(bundle_dir)


def _outputs(engine, x):
    return {k: v.float().cpu().numpy() for k, v in engine.run(x).items()}


@pytest.mark.parametrize(("dtype", "rtol"), [("bfloat16", 3e-2), ("float32", 5e-3)])
def test_torch_cuda_engine_matches_the_cpu(model, dtype, rtol):
    from hsafast.engines import create_engine

    tiles = random_tiles(37, 256, seed=2)
    x = model.encoder.preprocess(tiles)
    ref = _outputs(create_engine(model.spec(), "torch", "cpu"), x)
    gpu = create_engine(model.spec(), "torch", "cuda", dtype=dtype)
    got = _outputs(gpu, x.to("cuda"))
    for name in ref:
        assert_close(got[name], ref[name], rtol, f"{dtype} {name}")


@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_replay_the_eager_result(model, compile):
    from hsafast.engines import create_engine

    x = model.encoder.preprocess(random_tiles(19, 256, seed=3)).to("cuda")
    eager = _outputs(create_engine(model.spec(), "torch", "cuda"), x)
    graphed = create_engine(
        model.spec(), "torch", "cuda", cuda_graphs=True, graph_batch=16, compile=compile
    )
    got = _outputs(graphed, x)  # 19 tiles: one full replay and one padded
    for name in eager:
        assert_close(got[name], eager[name], 2e-2 if compile else 1e-6, name)


def test_preprocessing_on_the_gpu_equals_the_cpu(model):
    from hsafast.scoring.gpu import upload, wait
    from hsafast.scoring.preprocess import preprocess_cpu

    tiles = random_tiles(9, 256, seed=4)
    x, ready = upload(tiles, "cuda:0")
    wait(ready, x)
    got = model.encoder.preprocess(x).cpu()
    assert_close(got.numpy(), preprocess_cpu(model.encoder, tiles).numpy(), 1e-6, "preprocess")


def test_scorer_on_cuda_matches_the_cpu(bundle_dir, cmu_svs):
    from hsafast.scoring import Scorer, SlideInfo

    cpu = Scorer(bundle_dir, engine="torch", device="cpu").score(cmu_svs)
    scorer = Scorer(bundle_dir, engine="torch", device="cuda")
    gpu = scorer.score(cmu_svs)
    np.testing.assert_array_equal(gpu.coords, cpu.coords)
    for name, m in cpu.markers.items():
        g = gpu.markers[name]
        assert_close(g.probabilities, m.probabilities, 3e-2, f"{name} probabilities")
        assert_close(g.attention, m.attention, 5e-2, f"{name} attention")
        assert_close(g.positivity, m.positivity, 3e-2, f"{name} positivity")
    # a stream on the GPU gives the GPU whole-slide result
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    with open_slide(cmu_svs) as slide:
        grid = tile_grid(slide, detect_tissue(slide), mpp=0.5, size=256)
        tiles = next(iter(read_tiles(slide, grid, batch_size=len(grid)))).tiles
    stream = scorer.stream(SlideInfo("cmu", grid.patch_size_level0))
    order = np.random.default_rng(0).permutation(len(tiles))
    stream.push(tiles[order], grid.coords[order])
    streamed = stream.result()
    for name, m in gpu.markers.items():
        assert_close(streamed.markers[name].probabilities, m.probabilities, 1e-4, name)


def _ycbcr_slide(tmp_path):
    from hsafast.synth.tiffwrite import write_array_pyramid

    rng = np.random.default_rng(5)
    base = random_tiles(1, 1536, seed=6)[0].astype(np.float32)
    rgb = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "ycbcr.svs"
    write_array_pyramid(path, rgb[:1300, :1500], mpp=0.5)
    return path


def test_gpu_decoding_matches_the_cpu_reader(tmp_path):
    pytest.importorskip("nvidia.nvimgcodec")
    pytest.importorskip("imagecodecs", reason="writing a JPEG TIFF needs imagecodecs")
    from hsafast.scoring.gpu import copy_stream
    from hsafast.scoring.gpu_decode import GpuTileReader, gpu_level
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid

    with open_slide(_ycbcr_slide(tmp_path)) as slide:
        assert slide.backend_name == "tifffile"
        # 256-px tiles over 256-px file tiles, shifted by 100 px: every region spans
        # several file tiles, and those at the edges reach past the level
        grid = tile_grid(slide, None, mpp=slide.mpp, size=256)
        coords = grid.coords + 100
        level, why = gpu_level(slide, grid)
        assert level is not None, why
        expected = slide.read_regions(coords, 0, (256, 256))
        stream = copy_stream("cuda:0")
        got = GpuTileReader("cuda:0").read(level, coords, 256, stream)
        torch.cuda.synchronize()
        got = got.cpu().numpy()
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert diff.max() <= 1, (
        f"worst pixel {worst}: GPU {got[worst]} vs CPU {expected[worst]}, "
        f"mean difference {diff.mean():.3g}"
    )
    assert diff.mean() < 0.05


def test_scorer_decodes_on_the_gpu_where_it_can(bundle_dir, cmu_svs, tmp_path):
    pytest.importorskip("nvidia.nvimgcodec")
    pytest.importorskip("imagecodecs", reason="writing a JPEG TIFF needs imagecodecs")
    from hsafast.scoring import Scorer

    gpu = Scorer(bundle_dir, engine="torch", device="cuda")
    assert "decode (GPU)" not in gpu.score(cmu_svs).timings  # RGB JPEG tiles: CPU reader
    path = _ycbcr_slide(tmp_path)
    result = gpu.score(path)
    # the bundle's 0.5 um/px is the slide's own: read at its own resolution
    assert "decode (GPU)" in result.timings, result.timings
    ref = Scorer(bundle_dir, engine="torch", device="cpu").score(path)
    for name, m in ref.markers.items():
        assert_close(result.markers[name].probabilities, m.probabilities, 3e-2, name)


def test_onnxruntime_cuda_matches_torch(model):
    from hsafast.engines import create_engine
    from hsafast.engines.onnxruntime_engine import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (onnxruntime-gpu)")
    x = model.encoder.preprocess(random_tiles(11, 256, seed=7))
    ref = _outputs(create_engine(model.spec(), "torch", "cpu"), x)
    got = _outputs(create_engine(model.spec(), "onnxruntime", "cuda"), x.to("cuda"))
    for name in ref:
        assert_close(got[name], ref[name], 5e-3, name)


def test_tensorrt_matches_torch_and_caches_its_plan(model):
    pytest.importorskip("tensorrt")
    from hsafast.engines import create_engine

    x = model.encoder.preprocess(random_tiles(13, 256, seed=8))
    ref = _outputs(create_engine(model.spec(), "torch", "cpu"), x)
    engine = create_engine(model.spec(), "tensorrt", "cuda", max_batch=64, opt_batch=32)
    got = _outputs(engine, x.to("cuda"))
    for name in ref:
        assert_close(got[name], ref[name], 3e-2, name)
    assert engine.plan_file is not None and engine.plan_file.is_file()
    again = create_engine(model.spec(), "tensorrt", "cuda", max_batch=64, opt_batch=32)
    assert again.plan_file == engine.plan_file
