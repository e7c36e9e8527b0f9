"""Marker definitions: built-ins, slide rules and user files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hsafast.errors import ConfigError
from hsafast.stain import BUILTIN, CellCounts, Marker, get_marker, load_markers, slide_label
from hsafast.stain.stats import StainStats

TTF1 = """
[markers.ttf1]
compartment = "nuclear"
classes = ["negative", "positive"]
cutoffs = [0.10]
binary = { negative = "low", positive = "intermediate/high" }
dab_thresholds = [0.25, 0.45, 0.7]
description = "TTF-1, nuclear"

[markers.her2]
compartment = "membranous"
classes = ["0", "1+", "2+", "3+"]
cutoffs = [0.01, 0.10, 0.30]
positive_grade = 2
binary = { "0" = "low", "1+" = "low", "2+" = "intermediate/high", "3+" = "intermediate/high" }
"""


def _stats(
    marker: str | Marker,
    counts: list[list[int]],
    tissue: float = 50_000.0,
    others: list[list[int]] | None = None,
) -> StainStats:
    """Stats of tiles with given cell counts (cells, >=1+, >=2+, >=3+) and some DAB;
    ``others``: unscored cells and those >= 1+ per tile (p53's internal control)."""
    n = len(counts)
    pixels = np.zeros((n, 9))
    pixels[:, 0] = tissue
    pixels[:, 1:4] = [0.2 * tissue, 0.1 * tissue, 0.05 * tissue]
    pixels[:, 6] = 0.1 * tissue
    return StainStats(
        marker,
        np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 256,
        0,
        256,
        0.5,
        pixels,
        np.asarray(counts, dtype=np.int64),
        np.zeros(n, np.uint8),
        others=None if others is None else np.asarray(others, dtype=np.int64),
    )


def test_builtins_are_valid_and_found_by_alias() -> None:
    assert set(BUILTIN) == {"ki67", "p53", "pdl1"}
    assert get_marker("Ki-67").name == "ki67"
    assert get_marker("PD-L1").compartment == "membranous"
    assert get_marker("ki67", cutoffs=[0.3]).cutoffs == (0.3,)
    with pytest.raises(ConfigError, match="unknown marker 'her2'"):
        get_marker("her2")
    with pytest.raises(ConfigError, match="cutoffs"):
        get_marker("ki67", cutoffs=[0.3, 0.5])


@pytest.mark.parametrize(
    ("positive", "label", "binary"),
    [(10, "low", "low"), (199, "low", "low"), (200, "high", "intermediate/high")],
)
def test_ki67_index_cutoff(positive: int, label: str, binary: str) -> None:
    # Two tiles pooled: 1000 nuclei in all, ``positive`` of them stained.
    lab = slide_label(_stats("ki67", [[600, positive, 0, 0], [400, 0, 0, 0]]))
    assert (lab.label, lab.binary) == (label, binary)
    assert lab.score == pytest.approx(positive / 1000)


@pytest.mark.parametrize(
    ("counts", "label", "aberrant", "binary"),
    [
        ([500, 450, 420, 300], "overexpression", "aberrant", "intermediate/high"),
        ([500, 450, 400, 300], "overexpression", "aberrant", "intermediate/high"),  # 80 %
        ([500, 450, 399, 300], "wild-type", "wild-type", "low"),
        ([500, 150, 40, 5], "wild-type", "wild-type", "low"),
        ([500, 6, 0, 0], "wild-type", "wild-type", "low"),  # 1.2 %: scattered nuclei
        ([500, 5, 0, 0], "null", "aberrant", "low"),  # 1 %
        ([500, 0, 0, 0], "null", "aberrant", "low"),
    ],
)
def test_p53_patterns(counts: list[int], label: str, aberrant: str, binary: str) -> None:
    # 400 stromal and immune nuclei, 40 of them stained: the internal control
    lab = slide_label(_stats("p53", [counts], others=[[400, 40]]))
    assert lab.label == label, lab
    assert lab.groups["aberrant"] == aberrant
    assert lab.binary == binary
    assert lab.reason == ""


@pytest.mark.parametrize("control", [[0, 0], [400, 0], [400, 3]])
def test_p53_null_without_internal_control_has_no_label(control: list[int]) -> None:
    lab = slide_label(_stats("p53", [[500, 0, 0, 0]], others=[control]))
    assert lab.label is None and lab.binary is None
    assert "internal control" in lab.reason
    # an overexpression or wild-type pattern needs no control
    assert slide_label(_stats("p53", [[500, 450, 420, 0]], others=[control])).label


def test_p53_rule_reads_cell_counts_by_construction() -> None:
    """The pattern follows the clinical definitions for every split of 200 nuclei."""
    p53 = get_marker("p53")
    for stained in range(0, 201, 5):
        for strong in range(0, stained + 1, 5):
            reading = p53.read(CellCounts(200, (stained, strong, 0), 300, 30))
            if strong >= 160:
                assert reading.label == "overexpression"
            elif stained <= 2:
                assert reading.label == "null"
            else:
                assert reading.label == "wild-type"


@pytest.mark.parametrize(
    ("positive", "label", "binary"),
    [(0, "<1%", "low"), (9, "<1%", "low"), (10, "1-49%", "intermediate/high"),
     (499, "1-49%", "intermediate/high"), (500, ">=50%", "intermediate/high")],
)  # fmt: skip
def test_pdl1_tps_bands(positive: int, label: str, binary: str) -> None:
    lab = slide_label(_stats("pdl1", [[1000, positive, positive // 2, 0]]))
    assert (lab.label, lab.binary) == (label, binary)


def test_tps_classes_are_exact_at_the_cut_offs() -> None:
    """1 % and 50 % are compared on the counts: no float rounding moves a cell count
    across a class edge (7 / 700 is 1-49 %, 489 / 1000 is 1-49 %)."""
    from fractions import Fraction

    pdl1 = get_marker("pdl1")
    for n in range(1, 1500):
        for k in {n // 100 - 1, n // 100, -(-n // 100), n // 2 - 1, n // 2, -(-n // 2), n}:
            if not 0 <= k <= n:
                continue
            tps = Fraction(k, n)
            want = "<1%" if tps < Fraction(1, 100) else "1-49%" if tps < Fraction(1, 2) else ">=50%"
            assert pdl1.read(CellCounts(n, (k, 0, 0))).label == want, (k, n)
    assert pdl1.read(CellCounts(1000, (489, 0, 0))).label == "1-49%"


def test_no_cells_gives_no_label_and_no_nan() -> None:
    lab = slide_label(_stats("ki67", [[0, 0, 0, 0]]))
    assert lab.label is None and lab.binary is None
    assert lab.score == 0.0 and "no cells" in lab.flags
    assert not any(isinstance(v, float) and np.isnan(v) for v in lab.details.values())


def test_load_toml_and_json(tmp_path: Path) -> None:
    p = tmp_path / "markers.toml"
    p.write_text(TTF1)
    found = load_markers(p)
    assert set(found) == {"ttf1", "her2"}
    assert found["ttf1"].dab_thresholds == (0.25, 0.45, 0.7)
    her2 = get_marker("HER2", found)
    assert her2.positive_grade == 2 and her2.classify(0.15) == "2+"
    j = tmp_path / "one.json"
    j.write_text(json.dumps({"name": "CK7", "compartment": "cytoplasmic",
                             "classes": ["neg", "pos"], "cutoffs": [0.05],
                             "binary": {"neg": "low", "pos": "intermediate/high"}}))  # fmt: skip
    ck7 = load_markers(j)["ck7"]
    assert ck7.compartment == "cytoplasmic"
    lab = slide_label(_stats(ck7, [[0, 0, 0, 0]]))  # the stats keep the user's marker
    assert lab.marker == "ck7" and lab.label == "pos" and lab.score == pytest.approx(0.2)
    assert slide_label(_stats(her2, [[100, 20, 12, 3]])).label == "2+"  # 12 % at >= 2+


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=[0.1]\n"
         "binary={a='low',b='intermediate/high'}\ncolour='brown'\n", "unknown key.*colour"),
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=[0.1]\n",
         "missing key 'binary'"),
        ("[markers.x]\ncompartment='nucleus'\nclasses=['a','b']\ncutoffs=[0.1]\n"
         "binary={a='low',b='intermediate/high'}\n", "compartment"),
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=[1.5]\n"
         "binary={a='low',b='intermediate/high'}\n", "cutoffs"),
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=['high']\n"
         "binary={a='low',b='intermediate/high'}\n", "cutoffs"),
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=[0.1]\n"
         "binary={a='low',b='medium'}\n", "binary"),
        ("[markers.x]\ncompartment='nuclear'\nclasses=['a','b']\ncutoffs=[0.1]\n"
         "binary={a='low',b='intermediate/high'}\ntumour_min_area_um2=-5\n",
         "tumour_min_area_um2"),
        ("[markers.x\ncompartment='nuclear'\n", "malformed marker file"),
        ("[markers]\n[other]\n", "unknown top-level"),
    ],
)  # fmt: skip
def test_bad_marker_files_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_markers(p)
    assert info.value.path == p
    assert str(p) in str(info.value)


def test_missing_marker_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_markers(tmp_path / "none.json")


def test_marker_is_a_dataclass_with_defaults() -> None:
    m = Marker("cd8", "membranous", ("lo", "hi"), {"lo": "low", "hi": "intermediate/high"},
               cutoffs=(0.05,))  # fmt: skip
    assert m.classify(0.0) == "lo" and m.classify(0.05) == "hi"


def test_marker_nucleus_area_limit_applies_to_its_cells() -> None:
    from hsafast.stain import HED, CellConfig, detect_cells
    from hsafast.synth.ihc_tile import render_ihc_tile

    assert get_marker("p53").tumour_min_area_um2 == 58 == get_marker("pdl1").tumour_min_area_um2
    assert get_marker("ki67").tumour_min_area_um2 == 0
    tile = render_ihc_tile(256, nucleus_radius_um=5.0, density=0.6, positive_fraction=0.3,
                           seed=7).rgb  # fmt: skip
    (ki67,) = detect_cells(tile, HED, 0.5, "ki67")
    (p53,) = detect_cells(tile, HED, 0.5, "p53")
    assert ki67.area_um2 is not None and p53.area_um2 is not None
    assert (ki67.area_um2[ki67.scored] < 58).any()  # 10-um nuclei: some measure below
    assert p53.scored.any() and (p53.area_um2[p53.scored] >= 58).all()
    # a cell rule switched off stays off: every cell counts
    every = CellConfig(tumour_min_area_um2=0, tumour_min_width_um=0, tumour_min_fill=0,
                       tumour_min_neighbours=0, tumour_min_group_share=0)  # fmt: skip
    assert detect_cells(tile, HED, 0.5, "p53", every)[0].scored.all()
