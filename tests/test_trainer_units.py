"""Trainer pieces against plain references: losses, masks, schedule, augmentation, config."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hsafast.errors import ConfigError
from hsafast.trainer.config import OptimConfig, TrainConfig, config_from_mapping, load_config
from hsafast.trainer.data import (
    augment_pair,
    draw_stain_jitter,
    epoch_generator,
    global_batches,
    pad_bags,
    stain_jitter,
)
from hsafast.trainer.loop import cosine_warmup
from hsafast.trainer.losses import info_nce, mask_tiles, random_tile_mask, weighted_bce


def _info_nce_reference(a: np.ndarray, b: np.ndarray, t: float) -> float:
    """The authors' loss written out with loops, in float64."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = a @ b.T / t
    rows = [-sim[i, i] + math.log(np.exp(sim[i]).sum()) for i in range(len(a))]
    cols = [-sim[i, i] + math.log(np.exp(sim[:, i]).sum()) for i in range(len(a))]
    return 0.5 * (np.mean(rows) + np.mean(cols))


@pytest.mark.parametrize("t", [0.01, 0.1, 1.0])
def test_info_nce_matches_the_written_out_loss(t: float) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 12)), rng.normal(size=(9, 12))
    got = float(info_nce(torch.tensor(a), torch.tensor(b), t))
    expected = _info_nce_reference(a, b, t)
    assert abs(got - expected) < 1e-4 * max(1.0, abs(expected)), (got, expected)
    # symmetric in its two arguments, and low for aligned pairs
    assert abs(float(info_nce(torch.tensor(b), torch.tensor(a), t)) - got) < 1e-4 * max(1, got)
    aligned = float(info_nce(torch.tensor(a), torch.tensor(a * 3.0), t))
    assert aligned < got


def test_random_tile_mask_drops_half_of_the_real_tiles_only() -> None:
    counts = [10, 7, 1, 4]
    gens = [epoch_generator(0, 0, i) for i in range(4)]
    drop = random_tile_mask(counts, 10, 0.5, gens)
    assert drop.sum(dim=1).tolist() == [5, 3, 0, 2]
    for i, n in enumerate(counts):
        assert not drop[i, n:].any()  # padding never chosen
    again = random_tile_mask(counts, 10, 0.5, [epoch_generator(0, 0, i) for i in range(4)])
    assert torch.equal(drop, again)
    feats = torch.randn(4, 10, 3)
    masked = mask_tiles(feats, drop)
    assert (masked[drop] == 0).all() and torch.equal(masked[~drop], feats[~drop])


def test_weighted_bce_ignores_tiles_without_targets() -> None:
    logits = torch.tensor([0.3, -1.0, 2.0])
    target = torch.tensor([0.5, 0.9, 0.1])
    w = torch.tensor([1.0, 0.0, 1.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], target[[0, 2]])
    assert torch.allclose(weighted_bce(logits, target, w), expected)
    assert float(weighted_bce(logits, target, torch.zeros(3))) == 0.0


def test_cosine_schedule_warms_up_then_decays() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    optim = OptimConfig(epochs=10, lr=1.0, warmup_epochs=2, min_lr=0.1)
    sched = cosine_warmup(opt, optim, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9]  # warm-up over 10 steps
    assert abs(max(lrs) - 1.0) < 0.05
    assert all(x >= y - 1e-12 for x, y in itertools.pairwise(lrs[10:]))  # decays
    assert abs(lrs[-1] - 0.1) < 0.01


def test_batches_depend_only_on_seed_and_epoch() -> None:
    a = global_batches(21, 8, epoch_generator(3, 4))
    b = global_batches(21, 8, epoch_generator(3, 4))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert sorted(np.concatenate(a).tolist()) == list(range(21))  # 8 + 8 + 5
    c = global_batches(21, 8, epoch_generator(3, 5))
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    # a last batch of one item has no negative for InfoNCE and is dropped
    assert len(global_batches(17, 8, epoch_generator(0, 0))) == 2


def test_augmentation_moves_both_tiles_of_a_pair_alike() -> None:
    rng = np.random.default_rng(2)
    he = torch.from_numpy(rng.integers(0, 256, (64, 12, 12, 3), dtype=np.uint8))
    ihc = torch.from_numpy((255 - he.numpy()).copy())
    out_he, out_ihc = augment_pair(he, ihc, epoch_generator(0, 0))
    assert torch.equal(out_ihc, 255 - out_he)  # the same transform on both
    changed = 0
    for i in range(64):
        variants = [
            torch.rot90(t, k, dims=(0, 1)) for t in (he[i], he[i].flip(1)) for k in range(4)
        ]
        assert any(torch.equal(out_he[i], v) for v in variants)
        changed += not torch.equal(out_he[i], he[i])
    assert changed > 40  # 7 of 8 draws change the tile


def _stain_jitter_reference(tiles: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Beer-Lambert in float64, pixel by pixel: RGB -> optical density -> H/E/DAB amounts,
    scaled and shifted, and back."""
    from hsafast.stain.vectors import HED

    m = HED.rgb_from_stains / np.linalg.norm(HED.rgb_from_stains, axis=1, keepdims=True)
    inv = np.linalg.inv(m)
    out = np.empty_like(tiles)
    for i, j, k in itertools.product(*map(range, tiles.shape[:3])):
        od = -np.log((tiles[i, j, k].astype(np.float64) + 1.0) / 256.0)
        amounts = od @ inv * jitter[i, 0] + jitter[i, 1]
        rgb = 256.0 * np.exp(-(amounts @ m)) - 1.0
        out[i, j, k] = np.clip(np.round(rgb), 0, 255)
    return out


def test_stain_jitter_matches_beer_lambert_reference() -> None:
    rng = np.random.default_rng(5)
    tiles = rng.integers(30, 250, (6, 9, 9, 3), dtype=np.uint8)
    jitter = draw_stain_jitter(6, epoch_generator(0, 0), 0.05)
    got = stain_jitter(torch.from_numpy(tiles), jitter).numpy().astype(int)
    ref = _stain_jitter_reference(tiles, jitter.numpy().astype(np.float64)).astype(int)
    diff = np.abs(got - ref)
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff.max() <= 1, f"worst element {worst}: {got[worst]} vs reference {ref[worst]}"
    assert (got != tiles).mean() > 0.5  # the jitter changes most pixels
    # no jitter gives the tiles back; a stronger hematoxylin darkens them
    none = torch.tensor([[1.0] * 3, [0.0] * 3]).expand(6, 2, 3)
    assert torch.equal(stain_jitter(torch.from_numpy(tiles), none), torch.from_numpy(tiles))
    darker = none.clone()
    darker[:, 0, 0] = 1.3
    assert stain_jitter(torch.from_numpy(tiles), darker).float().mean() < tiles.mean()


def test_stain_jitter_draws_within_strength() -> None:
    j = draw_stain_jitter(500, epoch_generator(1, 0), 0.05)
    assert j.shape == (500, 2, 3)
    assert (j[:, 0] - 1).abs().max() <= 0.05 and j[:, 1].abs().max() <= 0.05
    assert (j[:, 0] - 1).abs().max() > 0.04 and j[:, 1].std() > 0.02


def test_pad_bags_marks_real_tiles() -> None:
    x, mask = pad_bags([torch.randn(3, 4), torch.randn(5, 4)])
    assert x.shape == (2, 5, 4) and mask.sum(1).tolist() == [3, 5] and (x[0, 3:] == 0).all()


# ---- configuration ---------------------------------------------------------------------
def test_config_rejects_unknown_keys_by_name() -> None:
    base = {"manifest": "m.csv", "out": "o"}
    with pytest.raises(ConfigError, match="epochz"):
        config_from_mapping(TrainConfig, {**base, "slide": {"optim": {"epochz": 3}}})
    with pytest.raises(ConfigError, match="bogus"):
        config_from_mapping(TrainConfig, {**base, "bogus": 1})
    with pytest.raises(ConfigError, match=r"slide\.temperature"):
        config_from_mapping(TrainConfig, {**base, "slide": {"temperature": -1.0}})
    with pytest.raises(ConfigError, match="modes"):
        config_from_mapping(TrainConfig, {**base, "modes": ["slide", "nonsense"]})
    with pytest.raises(ConfigError, match=r"patch\.optim.*batch_size"):
        config_from_mapping(TrainConfig, {**base, "patch": {"optim": {"batch_size": 1}}})
    with pytest.raises(ConfigError, match="patch-encoder"):
        config_from_mapping(TrainConfig, {**base, "modes": ["slide"]})


def test_config_defaults_follow_the_authors() -> None:
    config = config_from_mapping(TrainConfig, {"manifest": "m.csv", "out": "o"})
    assert config.slide.temperature == 0.01 and config.slide.mask_fraction == 0.5
    assert config.slide.head_dropout == 0.5 and config.data.max_tiles == 4096
    assert config.folds == 5


def test_demo_config_is_valid_and_takes_changes() -> None:
    from hsafast.trainer import demo_config

    cfg = demo_config("m.csv", "out")
    assert cfg.folds == 2 and cfg.patch.stain_jitter > 0 and cfg.patch.optim.epochs == 8
    changed = demo_config("m.csv", "out", folds=3, patch={"optim": {"epochs": 2}})
    assert changed.folds == 3 and changed.patch.optim.epochs == 2
    with pytest.raises(ConfigError, match="epochz"):
        demo_config("m.csv", "out", patch={"optim": {"epochz": 2}})


def test_load_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'manifest = "cohort/manifest.csv"\nout = "runs/a"\nfolds = 3\n'
        '[data]\ncache = "cache"\n[slide.optim]\nepochs = 4\n'
    )
    config = load_config(path)
    assert config.manifest == str(tmp_path / "cohort" / "manifest.csv")
    assert config.cache_dir == tmp_path / "cache"
    assert config.slide.optim.epochs == 4 and config.folds == 3
    assert load_config(path, out=str(tmp_path / "other")).out == str(tmp_path / "other")
    path.write_text('manifest = "m.csv"\nout = "o"\n[data]\ntile_sise = 3\n')
    with pytest.raises(ConfigError, match="tile_sise") as info:
        load_config(path)
    assert info.value.path == path


def test_hsafast_loads_the_trainer_only_when_training() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hsafast, hsafast.cli; hsafast.cli.build_parser(); "
        "assert 'hsafast.trainer' not in sys.modules, 'trainer imported'; "
        "import hsafast.trainer; assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
