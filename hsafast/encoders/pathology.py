"""Published pathology tile encoders, loaded from local files only (never downloaded).

Architectures are rebuilt in timm as their publishers describe them, so their released
checkpoints load strictly (every tensor name and shape must fit). The weights are gated by
their publishers; put them where ``hsafast.encoders.locations`` says (the error of a missing
file names the exact path).

- ``uni``: UNI (Chen et al., Nat. Med. 2024), ViT-L/16 at 224 px with LayerScale, 1024-d,
  ``pytorch_model.bin`` from huggingface.co/MahmoodLab/UNI.
- ``gigapath``: Prov-GigaPath's tile encoder (Xu et al., Nature 2024), ViT-g/16 (40 blocks,
  width 1536, LayerScale), 1536-d; tiles resized to 256 and centre-cropped to 224 as its
  model card does; ``pytorch_model.bin`` from huggingface.co/prov-gigapath/prov-gigapath.
- ``virchow2``: Virchow 2 (Zimmermann et al., 2024), ViT-H/14 with SwiGLU and 4 register
  tokens; the embedding is the class token concatenated with the mean patch token, 2560-d;
  ``pytorch_model.bin`` from huggingface.co/paige-ai/Virchow2.
- ``conch-style``: the layout of CONCH v1's image tower (Lu et al., Nat. Med. 2024): a
  ViT-B/16 trunk at 448 px, a one-query attentional pooler (CoCa) to 512-d and a LayerNorm,
  i.e. ``encode_image(proj_contrast=False, normalize=False)``; it keeps the ``visual.trunk``,
  ``visual.attn_pool_contrast`` and ``visual.ln_contrast`` tensors of a checkpoint and ignores
  the text tower. Its equality with CONCH's own code has not been checked on the released
  weights, which are not available here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from hsafast.encoders.base import IMAGENET_MEAN, IMAGENET_STD, TileEncoder
from hsafast.encoders.registry import EncoderInfo, register_encoder
from hsafast.encoders.timm_family import TimmEncoder, import_timm

__all__ = ["ConchStyleEncoder"]

#: OpenAI CLIP's normalisation, which CONCH keeps.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _timm_model(arch: str, **kwargs: Any) -> nn.Module:
    timm = import_timm()
    return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)


def build_uni() -> TileEncoder:
    model = _timm_model(
        "vit_large_patch16_224",
        img_size=224,
        patch_size=16,
        init_values=1e-5,
        dynamic_img_size=True,
    )
    return TimmEncoder("uni", model, 1024, 224, IMAGENET_MEAN, IMAGENET_STD)


def build_gigapath() -> TileEncoder:
    model = _timm_model(
        "vit_giant_patch14_dinov2",
        img_size=224,
        in_chans=3,
        patch_size=16,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        init_values=1e-5,
        mlp_ratio=5.33334,
        dynamic_img_size=True,
    )
    return TimmEncoder("gigapath", model, 1536, 224, IMAGENET_MEAN, IMAGENET_STD, resize_size=256)


def build_virchow2() -> TileEncoder:
    timm = import_timm()
    model = _timm_model(
        "vit_huge_patch14_224",
        img_size=224,
        init_values=1e-5,
        reg_tokens=4,
        mlp_ratio=5.3375,
        global_pool="",
        dynamic_img_size=True,
        mlp_layer=timm.layers.SwiGLUPacked,
        act_layer=nn.SiLU,
    )
    return TimmEncoder(
        "virchow2",
        model,
        2560,
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        readout="cls+mean",
        prefix_tokens=5,  # the class token and 4 registers
    )


class _AttentionalPooler(nn.Module):
    """CoCa's attentional pooler: learned queries attend over the (normalised) tokens."""

    def __init__(self, dim: int, context_dim: int, heads: int, queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, dim))
        self.attn = nn.MultiheadAttention(dim, heads, kdim=context_dim, vdim=context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = self.ln_k(x).permute(1, 0, 2)  # (tokens, batch, context)
        query = self.ln_q(self.query).unsqueeze(1).expand(-1, keys.shape[1], -1)
        return self.attn(query, keys, keys, need_weights=False)[0].permute(1, 0, 2)


class _ConchTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = _timm_model("vit_base_patch16_224", img_size=448, global_pool="")
        self.attn_pool_contrast = _AttentionalPooler(512, 768, heads=8, queries=1)
        self.ln_contrast = nn.LayerNorm(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk(x))[:, 0])


class ConchStyleEncoder(TileEncoder):
    """CONCH v1's image tower layout (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("conch-style", 512, 448, CLIP_MEAN, CLIP_STD)
        self.tower = _ConchTower()

    @property
    def weights_module(self) -> nn.Module:
        return self.tower

    def select_weights(self, state: dict[str, Any]) -> dict[str, Any]:
        keep = ("trunk.", "attn_pool_contrast.", "ln_contrast.")
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        return {k: v for k, v in state.items() if k.startswith(keep)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


def _register(
    name: str,
    dim: int,
    size: int,
    build: Any,
    description: str,
    origin: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> None:
    register_encoder(
        EncoderInfo(
            name=name,
            family="pathology",
            dim=dim,
            input_size=size,
            description=description,
            build=build,
            weights="required",
            weights_file="pytorch_model.bin",
            weights_origin=origin,
            mean=mean,
            std=std,
        )
    )


_register(
    "uni",
    1024,
    224,
    build_uni,
    "UNI, ViT-L/16, 1024-d",
    "https://huggingface.co/MahmoodLab/UNI",
)
_register(
    "gigapath",
    1536,
    224,
    build_gigapath,
    "Prov-GigaPath tile encoder, ViT-g/16, 1536-d",
    "https://huggingface.co/prov-gigapath/prov-gigapath",
)
_register(
    "virchow2",
    2560,
    224,
    build_virchow2,
    "Virchow 2, ViT-H/14, class + mean patch token, 2560-d",
    "https://huggingface.co/paige-ai/Virchow2",
)
_register(
    "conch-style",
    512,
    448,
    ConchStyleEncoder,
    "CONCH v1 image-tower layout, ViT-B/16 at 448 px + attentional pooler, 512-d",
    "https://huggingface.co/MahmoodLab/CONCH",
    CLIP_MEAN,
    CLIP_STD,
)
