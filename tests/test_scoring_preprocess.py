"""The scorer's CPU preprocessing equals the encoder's own, element for element."""

from __future__ import annotations

import pytest
import torch
from scoring_helpers import random_tiles

from hsafast.encoders import create_encoder
from hsafast.scoring.preprocess import fast_path, preprocess_cpu


@pytest.mark.parametrize(
    ("encoder", "tile"),
    [
        ("hsafast-cnn-s", 256),
        ("hsafast-cnn-s", 128),
        ("hsafast-cnn-s", 512),
        ("hsafast-vit-t", 384),
        ("hsafast-test-tiny", 64),
        ("hsafast-cnn-s", 200),
    ],
)
def test_equal_to_the_encoders_preprocess(encoder, tile):
    enc = create_encoder(encoder)
    tiles = random_tiles(5, tile, seed=tile)
    expected = enc.preprocess(tiles)
    got = preprocess_cpu(enc, tiles)
    assert fast_path(enc, tile) == (
        tile in (enc.input_size, 2 * enc.input_size, 4 * enc.input_size)
    )
    assert got.shape == expected.shape and got.dtype == expected.dtype
    diff = (got - expected).abs()
    worst = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
    assert torch.equal(got, expected), f"worst element {worst}: {got[worst]} vs {expected[worst]}"
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_other_inputs_go_to_the_encoder():
    enc = create_encoder("hsafast-test-tiny")
    tiles = torch.from_numpy(random_tiles(2, 64))
    assert torch.equal(preprocess_cpu(enc, tiles), enc.preprocess(tiles))
