"""Exporting the tile network to ONNX with torch.onnx, cached beside the bundle's weights.

The export uses PyTorch's current exporter (`torch.onnx.export(..., dynamo=True)`) with a
dynamic batch axis, so one file serves every batch size, and it is checked once against the
eager network on a random batch before it is cached. The file is named by a hash of the
weights, the outputs and the export options (``model-<key>.onnx``), so a changed model never
picks up a stale file; the cache is written atomically and is optional (a read-only bundle
exports in memory on each load).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.engines.base import ModelSpec
from hsafast.errors import EngineError

log = logging.getLogger("hsafast.engines")

#: ONNX opset of the export (onnxruntime >= 1.18 and TensorRT 10 read it).
OPSET = 18
#: Input name of the exported graph.
INPUT_NAME = "tiles"
#: Largest relative difference from the eager network that an export may show (float32).
EXPORT_RTOL = 1e-3


def onnx_path(spec: ModelSpec) -> Path | None:
    """Where the cached export of this model lives (None without a cache folder)."""
    if spec.cache_dir is None:
        return None
    return Path(spec.cache_dir) / f"model-{spec.export_key(opset=OPSET)}.onnx"


def onnx_model(spec: ModelSpec) -> bytes:
    """The serialised ONNX model of spec.network: from the cache, or exported now."""
    path = onnx_path(spec)
    if path is not None and path.is_file():
        log.debug("using the cached ONNX export %s", path)
        return path.read_bytes()
    data = export_onnx(spec)
    if path is not None:
        from hsafast._fileio import atomic_write_bytes

        try:
            atomic_write_bytes(path, data)
            log.info("cached the ONNX export in %s", path)
        except OSError as exc:
            log.warning("cannot cache the ONNX export in %s (%s); it stays in memory", path, exc)
    return data


def export_onnx(spec: ModelSpec) -> bytes:
    """Exports the network (float32, CPU) with a dynamic batch axis and checks it once."""
    import torch

    net = spec.network.eval().float().cpu()
    example = torch.rand(
        2, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0)
    )
    batch = torch.export.Dim("batch", min=1, max=65536)
    log.info("exporting the tile network to ONNX (opset %d)", OPSET)
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net,
                (example,),
                None,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(spec.output_names),
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types for unsupported operators
        raise EngineError(f"the tile network cannot be exported to ONNX: {exc}") from exc
    if program is None:
        raise EngineError("torch.onnx.export returned no program")
    data: bytes = program.model_proto.SerializeToString()
    _check_export(spec, data)
    return data


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's passes log every rewrite at INFO: keep them at WARNING meanwhile."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_export(spec: ModelSpec, data: bytes) -> None:
    """Runs the export on a fresh batch of 3 (not the traced 2) and compares with eager torch."""
    import onnxruntime as ort
    import torch

    x = torch.rand(
        3, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.inference_mode():
        expected = [o.numpy() for o in _as_tuple(spec.network(x))]
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run(list(spec.output_names), {INPUT_NAME: x.numpy()})
    except Exception as exc:  # ORT raises its own types; a fixed batch size shows up here
        raise EngineError(f"the ONNX export cannot run a batch of 3 tiles: {exc}") from exc
    for name, a, e in zip(spec.output_names, got, expected, strict=True):
        err = float(np.abs(a - e).max()) / max(float(np.abs(e).max()), 1e-12)
        if not err <= EXPORT_RTOL:
            raise EngineError(
                f"the ONNX export differs from the network on output {name!r}: relative error "
                f"{err:.3g} > {EXPORT_RTOL:g}"
            )


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, list | tuple) else (out,)
