"""Any timm architecture as a tile encoder (``timm:<architecture>``), weights from local files.

timm (and torchvision, which it needs) is the optional ``timm`` extra, imported only here and
only when such an encoder is described or built. The input size and normalisation come from
the architecture's default configuration; the embedding is timm's pooled output
(``num_classes=0``). Without a weights file the model is randomly initialised (seeded).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from hsafast.encoders.base import TileEncoder
from hsafast.encoders.registry import TIMM_PREFIX, EncoderInfo
from hsafast.errors import EncoderError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["TimmEncoder", "import_timm", "timm_info"]


def import_timm() -> ModuleType:
    """timm, or an EncoderError that names the extra to install."""
    try:
        import timm
    except ImportError as exc:
        raise EncoderError(
            f"timm encoders need the optional 'timm' extra (pip install 'hsafast[timm]'): {exc}"
        ) from exc
    return timm


class TimmEncoder(TileEncoder):
    """A timm model; its state dict is laid out as the architecture's weight files are.

    ``readout`` turns the model's output into the embedding: 'pooled' (timm's own pooling
    with ``num_classes=0``) or 'cls+mean' (class token concatenated with the mean of the
    patch tokens after ``prefix_tokens``, Virchow's embedding; the model is built with
    ``global_pool=''`` so that it returns every token).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        dim: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        readout: str = "pooled",
        prefix_tokens: int = 1,
        resize_size: int | None = None,
    ) -> None:
        super().__init__(name, dim, input_size, mean, std, resize_size=resize_size)
        if readout not in ("pooled", "cls+mean"):
            raise EncoderError(f"encoder {name!r}: unknown readout {readout!r}")
        self.model = model
        self.readout = readout
        self.prefix_tokens = int(prefix_tokens)

    @property
    def weights_module(self) -> nn.Module:
        return self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.readout == "pooled":
            return out
        return torch.cat([out[:, 0], out[:, self.prefix_tokens :].mean(dim=1)], dim=-1)


def _create(arch: str, seed: int, kwargs: dict[str, Any]) -> nn.Module:
    timm = import_timm()
    if not timm.is_model(arch):
        raise EncoderError(f"timm has no architecture {arch!r} (timm {timm.__version__})")
    if kwargs.pop("pretrained", False):
        raise EncoderError("hsafast never downloads weights: pass weights=PATH to a local file")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise EncoderError(f"timm cannot build {arch!r} with {kwargs}: {exc}") from exc


def _data_config(model: nn.Module) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return (
        int(size[-1]),
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )


def _output_dim(model: nn.Module) -> int:
    dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not dim:
        raise EncoderError(f"cannot tell the embedding width of {type(model).__name__}")
    return int(dim)


def build_timm(name: str, arch: str, seed: int = 0, **kwargs: Any) -> TimmEncoder:
    """A randomly initialised (seeded) timm encoder; ``kwargs`` go to ``timm.create_model``."""
    model = _create(arch, seed, dict(kwargs))
    size, mean, std = _data_config(model)
    size = int(kwargs.get("img_size", size))
    return TimmEncoder(name, model, _output_dim(model), size, mean[:3], std[:3])  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _described(arch: str) -> TimmEncoder:
    """The architecture built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return build_timm(TIMM_PREFIX + arch, arch)


def timm_info(arch: str) -> EncoderInfo:
    """The registry entry of ``timm:<arch>`` (for the architecture's default configuration)."""
    described = _described(arch)
    build: Callable[..., TileEncoder] = functools.partial(build_timm, TIMM_PREFIX + arch, arch)
    return EncoderInfo(
        name=TIMM_PREFIX + arch,
        family="timm",
        dim=described.dim,
        input_size=described.input_size,
        mean=described.mean,  # type: ignore[arg-type]
        std=described.std,  # type: ignore[arg-type]
        description=f"timm {arch}, weights from a local file",
        build=build,
        weights="optional",
    )
