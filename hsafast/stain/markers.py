"""Marker definitions: how DAB staining becomes a score and a slide class.

A :class:`Marker` says which compartment carries the stain, which DAB grade
makes a cell (or pixel) positive, and how the slide score maps to classes and
to the binary "low" vs "intermediate/high" label HistoStainAlign trains on.
Three are built in; users add more in TOML or JSON without code::

    [markers.ttf1]
    compartment = "nuclear"
    classes = ["negative", "positive"]
    cutoffs = [0.01]
    binary = { negative = "low", positive = "intermediate/high" }

Built-in conventions:

* ``ki67``: positive share of nuclei (the Ki-67 index); one cut-off, 20 % by
  default (St Gallen consensus, Goldhirsch et al., Ann Oncol 2013); the IKWG's
  5 % / 30 % bands (Nielsen et al., JNCI 2021) are one override away.
* ``p53``: wild-type (heterogeneous), overexpression (strong nuclear staining in
  at least 80 % of nuclei) or null (no stained tumour nuclei while the internal
  control, stromal and immune nuclei, stains); patterns as described by Köbel et
  al. (J Pathol Clin Res 2016), 80 % being a common cut-off for overexpression;
  "aberrant" groups overexpression and null. A null pattern without a stained
  internal control is not read: it looks the same as a stain that failed.
* ``pdl1``: tumour proportion score (share of cells with any membranous
  staining) <1 %, 1-49 %, >=50 % (the 22C3 pharmDx bands of KEYNOTE-024 and -042).

The rules live here (:meth:`Marker.read`); :func:`hsafast.stain.slide_label` pools
a slide's counts, checks that the image can be scored at all and hands the counts
to the marker. Class edges are compared on the counts themselves, so a TPS of
489 / 1000 is 1-49 % and 500 / 1000 is >= 50 %, with no rounding in between.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from hsafast.errors import ConfigError

Compartment = Literal["nuclear", "membranous", "cytoplasmic"]
Rule = Literal["cutoffs", "p53"]
COMPARTMENTS = ("nuclear", "membranous", "cytoplasmic")
RULES = ("cutoffs", "p53")
BINARY = ("low", "intermediate/high")


@dataclass(frozen=True)
class CellCounts:
    """What a marker rule reads: a slide's cells pooled over its included tiles."""

    scored: int
    """Cells a clinical score counts (tumour-like; every cell where no tumour rule applies)."""
    graded: tuple[int, int, int]
    """Scored cells at DAB grade >= 1+, >= 2+ and >= 3+."""
    others: int = 0
    """Cells not scored (stromal and immune cells): the internal control of p53."""
    others_positive: int = 0
    """Of ``others``, those at DAB grade >= 1+."""

    def __post_init__(self) -> None:
        values = (self.scored, *self.graded, self.others, self.others_positive)
        if len(self.graded) != 3 or any(int(v) != v or v < 0 for v in values):
            raise ConfigError(f"cell counts are non-negative integers, got {values}")
        if not self.scored >= self.graded[0] >= self.graded[1] >= self.graded[2]:
            raise ConfigError(f"graded counts must not exceed the scored cells, got {values}")
        if self.others_positive > self.others:
            raise ConfigError("others_positive cannot exceed others")


@dataclass(frozen=True)
class MarkerReading:
    """A marker's reading of a slide: its class, or why there is none."""

    label: str | None
    score: float
    """Positive share (cells, or tissue pixels for cytoplasmic markers), 0-1."""
    reason: str = ""
    """Why ``label`` is None ('' when there is a label)."""
    flags: tuple[str, ...] = ()


def at_least(count: float, total: float, fraction: float) -> bool:
    """``count / total >= fraction`` on the counts, without the rounding of the division
    (``7 / 700 >= 0.01`` is true)."""
    return count >= fraction * total * (1.0 - 1e-12)


@dataclass(frozen=True)
class Marker:
    """One IHC marker: compartment, positivity, slide rule and classes."""

    name: str
    compartment: Compartment
    classes: tuple[str, ...]
    """Slide classes, from the lowest score up (for ``p53``: wild-type, overexpression, null)."""
    binary: Mapping[str, str]
    """Class -> "low" or "intermediate/high"."""
    rule: Rule = "cutoffs"
    """``cutoffs`` (score bands) or ``p53`` (pattern rule)."""
    cutoffs: tuple[float, ...] = ()
    """Ascending score edges (fractions 0-1) between consecutive classes."""
    dab_thresholds: tuple[float, float, float] = (0.2, 0.4, 0.6)
    """DAB log10 OD of grades 1+, 2+, 3+ (pixels and cells)."""
    positive_grade: int = 1
    """Grade at which a cell or pixel counts as positive."""
    strong_grade: int = 2
    """``p53``: grade of a strongly stained nucleus."""
    overexpression_fraction: float = 0.8
    """``p53``: share of strongly stained nuclei for overexpression."""
    null_fraction: float = 0.01
    """``p53``: at most this share of stained tumour nuclei reads as null (clinically none:
    "complete absence"; 1 % leaves room for a stray false-positive nucleus)."""
    min_control_fraction: float = 0.01
    """``p53``: least share of the unscored (stromal, immune) nuclei that must stain for a
    null reading: the internal control that shows the stain worked. Without it a null
    pattern has no label."""
    min_cells: int = 50
    """Fewer cells on a slide and its label carries a "few cells" flag."""
    tumour_min_area_um2: float = 0.0
    """Least nucleus area (um^2) of a scored cell for this marker, where it must be larger
    than ``CellConfig.tumour_min_area_um2`` (the larger of the two applies; 0: the cell
    rule's own). ``p53`` and ``pdl1``: 58 um^2, twice a small lymphocyte nucleus (29 um^2,
    the upper published mean: Baek et al., Korean J Hematol 2010), the comparison
    pathologists make for tumour nuclei. Their lowest classes are readings of almost no
    stained tumour cell (p53 null: <= 1 %; PD-L1 TPS < 1 %), so the scored cells must hold
    almost no immune cells, which stain there (p53's internal control; PD-L1-positive
    lymphocytes and macrophages, the known pitfall of the TPS). Ki-67 keeps the lower
    limit: its index is a share near the middle, and a stricter size cut favours stained
    nuclei, which measure larger (``docs/stain.md``)."""
    groupings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Other named class groupings, e.g. ``aberrant`` for p53."""
    description: str = ""

    def __post_init__(self) -> None:
        _validate(self, None)

    def with_options(self, **changes: Any) -> Marker:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown marker field(s) {sorted(unknown)}")
        return replace(self, **_coerce(changes))

    def classify(self, score: float) -> str:
        """Class of a ``cutoffs`` marker for a score in [0, 1]."""
        return self.classes[sum(1 for c in self.cutoffs if at_least(score, 1.0, c))]

    def read(self, counts: CellCounts) -> MarkerReading:
        """The slide class of a nuclear or membranous marker from its pooled cell counts."""
        n = counts.scored
        if n == 0:
            return MarkerReading(None, 0.0, "no cells: no cell to score on the included tiles")
        positive = counts.graded[self.positive_grade - 1]
        score = positive / n
        if self.rule == "cutoffs":
            label = self.classes[sum(1 for c in self.cutoffs if at_least(positive, n, c))]
            return MarkerReading(label, score)
        return self._read_p53(counts, score)

    def read_pixels(self, tissue: float, positive_pixels: float) -> MarkerReading:
        """The slide class of a cytoplasmic marker: the DAB-positive share of tissue pixels."""
        if tissue <= 0:
            return MarkerReading(None, 0.0, "no tissue: no tissue on the included tiles")
        label = self.classes[sum(1 for c in self.cutoffs if at_least(positive_pixels, tissue, c))]
        return MarkerReading(label, positive_pixels / tissue)

    def _read_p53(self, counts: CellCounts, score: float) -> MarkerReading:
        n = counts.scored
        strong = counts.graded[self.strong_grade - 1]
        stained = counts.graded[0]
        if at_least(strong, n, self.overexpression_fraction):
            return MarkerReading("overexpression", score)
        if stained <= self.null_fraction * n * (1.0 + 1e-12):
            control = counts.others_positive > 0 and at_least(
                counts.others_positive, counts.others, self.min_control_fraction
            )
            if control:
                return MarkerReading("null", score)
            return MarkerReading(
                None,
                score,
                f"null pattern ({stained} of {n} tumour nuclei stained) without a stained "
                f"internal control ({counts.others_positive} of {counts.others} other nuclei): "
                "cannot be told from a stain that failed",
            )
        return MarkerReading("wild-type", score)


def _coerce(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    for key in ("classes", "cutoffs", "dab_thresholds"):
        if key in out and isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def _validate(m: Marker, path: Path | None) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"marker {m.name!r}: {key}: {why}", path)

    if not isinstance(m.name, str) or not m.name:
        raise bad("name", "must be a non-empty string")
    if m.compartment not in COMPARTMENTS:
        raise bad("compartment", f"{m.compartment!r} is not one of {COMPARTMENTS}")
    if m.rule not in RULES:
        raise bad("rule", f"{m.rule!r} is not one of {RULES}")
    if (
        not isinstance(m.classes, tuple)
        or len(m.classes) < 2
        or not all(isinstance(c, str) and c for c in m.classes)
        or len(set(m.classes)) != len(m.classes)
    ):
        raise bad("classes", "needs at least two distinct class names")
    if not isinstance(m.cutoffs, tuple) or not all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in m.cutoffs
    ):
        raise bad("cutoffs", "must be a list of numbers")
    if m.rule == "cutoffs":
        if len(m.cutoffs) != len(m.classes) - 1:
            raise bad(
                "cutoffs", f"needs {len(m.classes) - 1} value(s) for {len(m.classes)} classes"
            )
        if any(not 0 < c <= 1 for c in m.cutoffs) or list(m.cutoffs) != sorted(set(m.cutoffs)):
            raise bad("cutoffs", "must be increasing fractions in (0, 1]")
    elif set(m.classes) != {"wild-type", "overexpression", "null"}:
        raise bad("classes", "the p53 rule needs classes wild-type, overexpression and null")
    if not isinstance(m.binary, Mapping) or set(m.binary) != set(m.classes):
        raise bad("binary", f"must map every class {list(m.classes)} to {BINARY}")
    if any(v not in BINARY for v in m.binary.values()):
        raise bad("binary", f"values must be one of {BINARY}")
    for gname, g in m.groupings.items():
        if not isinstance(g, Mapping) or set(g) != set(m.classes):
            raise bad(f"groupings.{gname}", "must map every class to a group name")
    t = m.dab_thresholds
    if (
        not isinstance(t, tuple)
        or len(t) != 3
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in t)
        or not 0 < t[0] <= t[1] <= t[2]
    ):
        raise bad("dab_thresholds", "needs three OD values 0 < 1+ <= 2+ <= 3+")
    for key in ("positive_grade", "strong_grade"):
        v = getattr(m, key)
        if not isinstance(v, int) or isinstance(v, bool) or v not in (1, 2, 3):
            raise bad(key, "must be 1, 2 or 3")
    for key in ("overexpression_fraction", "null_fraction", "min_control_fraction"):
        v = getattr(m, key)
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 1:
            raise bad(key, "must be a fraction in [0, 1]")
    if not isinstance(m.min_cells, int) or isinstance(m.min_cells, bool) or m.min_cells < 0:
        raise bad("min_cells", "must be a non-negative integer")
    v = m.tumour_min_area_um2
    if not isinstance(v, int | float) or isinstance(v, bool) or not (math.isfinite(v) and v >= 0):
        raise bad("tumour_min_area_um2", "must be a non-negative area in um^2")
    if m.compartment == "cytoplasmic" and m.rule == "p53":
        raise bad("rule", "the p53 rule needs a nuclear compartment")


_HIGH = "intermediate/high"

BUILTIN: dict[str, Marker] = {
    "ki67": Marker(
        name="ki67",
        compartment="nuclear",
        classes=("low", "high"),
        cutoffs=(0.20,),
        binary={"low": "low", "high": _HIGH},
        description="Ki-67 proliferation index (share of stained nuclei), 20% cut-off",
    ),
    "p53": Marker(
        name="p53",
        compartment="nuclear",
        rule="p53",
        classes=("wild-type", "overexpression", "null"),
        # Expression level: only diffuse strong staining is high; the heterogeneous
        # weak-to-moderate wild-type pattern and the null pattern are low.
        binary={"null": "low", "wild-type": "low", "overexpression": _HIGH},
        groupings={
            "aberrant": {"wild-type": "wild-type", "overexpression": "aberrant", "null": "aberrant"}
        },
        tumour_min_area_um2=58.0,
        description="p53 pattern: wild-type, overexpression (>=80% strong) or null",
    ),
    "pdl1": Marker(
        name="pdl1",
        compartment="membranous",
        classes=("<1%", "1-49%", ">=50%"),
        cutoffs=(0.01, 0.50),
        binary={"<1%": "low", "1-49%": _HIGH, ">=50%": _HIGH},
        tumour_min_area_um2=58.0,
        description="PD-L1 tumour proportion score (cells with membranous staining)",
    ),
}

_ALIASES = {"ki-67": "ki67", "mib1": "ki67", "tp53": "p53", "pd-l1": "pdl1", "pd_l1": "pdl1"}


def get_marker(
    name: str | Marker, markers: Mapping[str, Marker] | None = None, **changes: Any
) -> Marker:
    """A marker by name (built-in or from ``markers``), optionally with fields changed."""
    if isinstance(name, Marker):
        return name.with_options(**changes) if changes else name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    table = {**BUILTIN, **(markers or {})}
    if key not in table:
        raise ConfigError(f"unknown marker {name!r}; known: {', '.join(sorted(table))}")
    m = table[key]
    return m.with_options(**changes) if changes else m


def load_markers(path: str | os.PathLike[str]) -> dict[str, Marker]:
    """Markers from a TOML or JSON file (``[markers.NAME]`` tables, or one marker)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read marker file: {exc.strerror}", p) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = _toml().loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"malformed marker file: {exc}", p) from None
    if not isinstance(data, dict):
        raise ConfigError("a marker file holds a table (object)", p)
    if "markers" in data:
        extra = set(data) - {"markers"}
        if extra:
            raise ConfigError(f"unknown top-level key(s) {sorted(extra)}", p)
        specs = data["markers"]
        if not isinstance(specs, dict) or not specs:
            raise ConfigError("'markers' must be a non-empty table of marker tables", p)
    elif "name" in data:
        specs = {str(data["name"]): {k: v for k, v in data.items() if k != "name"}}
    else:
        raise ConfigError("expected a [markers.NAME] table or a single marker with 'name'", p)
    return {name.lower(): marker_from_dict(name, spec, p) for name, spec in specs.items()}


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError("reading TOML on Python 3.10 needs tomli; or use JSON") from None
    return tomllib


def marker_from_dict(name: str, spec: Any, path: Path | None = None) -> Marker:
    """One marker from a mapping; unknown keys raise ConfigError naming the key."""
    if not isinstance(spec, dict):
        raise ConfigError(f"marker {name!r} must be a table", path)
    allowed = {f.name for f in fields(Marker)} - {"name"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(
            f"marker {name!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}", path
        )
    for key in ("compartment", "classes", "binary"):
        if key not in spec:
            raise ConfigError(f"marker {name!r}: missing key {key!r}", path)
    values = _coerce(spec)
    try:
        m = Marker.__new__(Marker)
        for f in fields(Marker):
            if f.name == "name":
                object.__setattr__(m, "name", name.lower())
            elif f.name in values:
                object.__setattr__(m, f.name, values[f.name])
            else:
                default = f.default_factory() if callable(f.default_factory) else f.default
                object.__setattr__(m, f.name, default)
        _validate(m, path)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"marker {name!r}: {exc}", path) from None
    return m
