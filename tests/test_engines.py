"""Engines: selection with reasons, clear errors for missing ones, ONNX Runtime parity."""

from __future__ import annotations

import logging

import pytest
import torch
from pooling_helpers import assert_close
from scoring_helpers import random_bundle, random_tiles

from hsafast.engines import create_engine, resolve_device, select_engine
from hsafast.engines.base import ModelSpec
from hsafast.errors import EngineError, InvalidParameterError
from hsafast.scoring.model import load_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "b"
    random_bundle(path, encoder="hsafast-cnn-s", tile_size=128)
    return load_model(path)


def test_onnxruntime_matches_torch_within_1e3(model):
    spec = model.spec()
    tiles = random_tiles(19, 128, seed=1)
    x = model.encoder.preprocess(tiles)
    ref = create_engine(spec, "torch", "cpu").run(x)
    got = create_engine(spec, "onnxruntime", "cpu").run(x)
    assert list(got) == list(spec.output_names)
    for name in spec.output_names:
        assert got[name].shape == ref[name].shape
        assert_close(got[name].numpy(), ref[name].numpy(), 1e-3, name)


def test_the_onnx_export_is_cached_by_model_hash(model):
    from hsafast.engines.export import onnx_path

    spec = model.spec()
    create_engine(spec, "onnxruntime", "cpu")
    path = onnx_path(spec)
    assert path is not None and path.is_file() and path.parent == model.cache_dir
    stamp = path.stat().st_mtime_ns
    create_engine(spec, "onnxruntime", "cpu")
    assert path.stat().st_mtime_ns == stamp  # read back, not exported again
    other = ModelSpec(spec.network, spec.input_size, spec.output_names, "f" * 64, spec.cache_dir)
    assert onnx_path(other) != path


def test_auto_picks_an_engine_and_logs_why(model, caplog):
    with caplog.at_level(logging.INFO, logger="hsafast.engines"):
        engine = create_engine(model.spec(), "auto", "cpu")
    assert engine.name in ("onnxruntime", "torch")
    assert any(f"engine {engine.name} on cpu:" in r.message for r in caplog.records)


def test_missing_or_impossible_engines_are_clear_errors(monkeypatch):
    import hsafast.engines as engines

    real = engines.installed
    monkeypatch.setattr(engines, "installed", lambda name: name != "tensorrt" and real(name))
    with pytest.raises(EngineError, match=r"hsafast\[trt\]"):
        select_engine("tensorrt", "cuda:0")
    monkeypatch.setattr(engines, "installed", lambda name: name == "torch")
    with pytest.raises(EngineError, match="pip install onnxruntime"):
        select_engine("onnxruntime", "cpu")
    assert select_engine("auto", "cpu")[0] == "torch"
    assert select_engine("auto", "cuda:0") == (
        "torch",
        'TensorRT is not installed (pip install "hsafast[trt]"): torch bf16',
    )
    with pytest.raises(EngineError, match="unknown engine 'tvm'"):
        select_engine("tvm", "cpu")
    with pytest.raises(EngineError, match="unknown device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_tensorrt_without_tensorrt_names_the_extra():
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from hsafast.engines.tensorrt_engine import TensorRTEngine

        with pytest.raises(EngineError, match=r'pip install "hsafast\[trt\]"'):
            TensorRTEngine(ModelSpec(torch.nn.Identity(), 8, ("x",), "0" * 64), "cuda:0")
    else:
        pytest.skip("TensorRT is installed here")


def test_tensorrt_plans_are_keyed_by_gpu_version_and_model():
    from hsafast.engines.tensorrt_engine import TensorRTOptions, plan_name

    spec = ModelSpec(torch.nn.Identity(), 224, ("emb",), "a" * 64)
    name = plan_name(spec, "NVIDIA H200", "10.13.0", TensorRTOptions())
    assert name.startswith("NVIDIA_H200-trt10.13.0-") and name.endswith(".plan")
    assert plan_name(spec, "NVIDIA H100 80GB HBM3", "10.13.0", TensorRTOptions()) != name
    assert plan_name(spec, "NVIDIA H200", "10.14.1", TensorRTOptions()) != name
    other = ModelSpec(torch.nn.Identity(), 224, ("emb",), "b" * 64)
    assert plan_name(other, "NVIDIA H200", "10.13.0", TensorRTOptions()) != name
    assert plan_name(spec, "NVIDIA H200", "10.13.0", TensorRTOptions(precision="fp16")) != name


def test_engine_options_are_validated(model):
    with pytest.raises(EngineError, match=r"unknown options \['bf16'\] for the torch engine"):
        create_engine(model.spec(), "torch", "cpu", bf16=True)
    from hsafast.engines.torch_engine import TorchOptions

    with pytest.raises(InvalidParameterError, match="TorchOptions.dtype"):
        TorchOptions(dtype="int8")
    with pytest.raises(InvalidParameterError, match="TorchOptions.graph_batch"):
        TorchOptions(graph_batch=0)
    from hsafast.engines.tensorrt_engine import TensorRTOptions

    with pytest.raises(InvalidParameterError, match="opt_batch <= max_batch"):
        TensorRTOptions(opt_batch=512, max_batch=256)


def test_an_export_that_lost_the_dynamic_batch_is_refused():
    from hsafast.engines.export import export_onnx

    class BatchOfTwo(torch.nn.Module):
        def forward(self, x):  # specialises on the batch size: no dynamic batch axis possible
            return (x.mean(dim=(1, 2, 3)) if x.shape[0] == 2 else x.sum(dim=(1, 2, 3)),)

    # the exporter fixes the batch at 2 without complaint; the check on 3 tiles catches it
    with pytest.raises(EngineError, match="cannot run a batch of 3 tiles"):
        export_onnx(ModelSpec(BatchOfTwo(), 8, ("y",), "0" * 64))
