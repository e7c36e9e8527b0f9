"""Small tile encoders that train from scratch on a CPU (the embedded demo's default).

Tiles are 256 px at 0.5 um/px; these encoders see them at 128 px (1 um/px, a 2x2 box
average), where a 7-um nucleus still spans about 7 pixels, and cost under a tenth of a
ResNet-18 at 224 px. See docs/encoders.md for the measured throughput.

- ``hsafast-cnn-s``: a residual CNN (stem at 64 x 64, four stages down to 4 x 4, global
  average), 256-d.
- ``hsafast-vit-t``: a ViT with 8-px patches (8 um, about one nucleus) over the 128-px input,
  4 pre-norm blocks of width 128, mean of the patch tokens, 128-d.
- ``hsafast-test-tiny``: a tiny residual CNN at 32 px, 16-d; for tests only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from hsafast.encoders.base import IMAGENET_MEAN, IMAGENET_STD, TileEncoder
from hsafast.encoders.registry import EncoderInfo, register_encoder

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SmallCNN", "SmallViT"]


def _conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (ResNet's basic block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        last = _conv_bn(width, width, relu=False)
        norm = last[1]
        assert isinstance(norm, nn.BatchNorm2d)
        # the branch starts at zero (Goyal et al., 2017), so each block begins as the identity
        nn.init.zeros_(norm.weight)
        self.body = nn.Sequential(_conv_bn(width, width), last)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class SmallCNN(TileEncoder):
    """A residual CNN: stem (stride 2), then per stage a stride-2 conv and a residual block."""

    def __init__(self, name: str, input_size: int, stem: int, widths: tuple[int, ...]) -> None:
        super().__init__(name, widths[-1], input_size, IMAGENET_MEAN, IMAGENET_STD)
        layers: list[nn.Module] = [_conv_bn(3, stem, stride=2), _conv_bn(stem, stem)]
        previous = stem
        for width in widths:
            layers += [_conv_bn(previous, width, stride=2), _Residual(width)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class SmallViT(TileEncoder):
    """A pre-norm ViT: patch embedding, learned positions, transformer blocks, token mean."""

    def __init__(
        self,
        name: str,
        input_size: int,
        patch: int,
        width: int,
        depth: int,
        heads: int,
    ) -> None:
        super().__init__(name, width, input_size, IMAGENET_MEAN, IMAGENET_STD)
        grid = input_size // patch
        self.patch_embed = nn.Conv2d(3, width, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, width))
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=2 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.norm(self.blocks(tokens)).mean(dim=1)


def _seeded(factory: Callable[..., TileEncoder], **fixed: Any) -> Callable[..., TileEncoder]:
    """A builder that initialises with torch's RNG forked and seeded (``seed=0`` default).

    The same name and seed give the same initial weights, hence the same hash, on every
    machine, and the caller's random state is left alone.
    """

    def build(seed: int = 0) -> TileEncoder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return factory(**fixed)

    return build


register_encoder(
    EncoderInfo(
        name="hsafast-cnn-s",
        family="small",
        dim=256,
        input_size=128,
        description="residual CNN, 128 px (1 um/px), 256-d; trains from scratch on a CPU",
        build=_seeded(
            SmallCNN, name="hsafast-cnn-s", input_size=128, stem=24, widths=(32, 64, 128, 256)
        ),
    )
)
register_encoder(
    EncoderInfo(
        name="hsafast-vit-t",
        family="small",
        dim=128,
        input_size=128,
        description="ViT, 8-px patches at 128 px, 4 blocks, 128-d; trains from scratch on a CPU",
        build=_seeded(
            SmallViT, name="hsafast-vit-t", input_size=128, patch=8, width=128, depth=4, heads=4
        ),
    )
)
register_encoder(
    EncoderInfo(
        name="hsafast-test-tiny",
        family="test",
        dim=16,
        input_size=32,
        description="a tiny residual CNN at 32 px, 16-d; exercises every code path in tests",
        build=_seeded(SmallCNN, name="hsafast-test-tiny", input_size=32, stem=8, widths=(16,)),
    )
)
