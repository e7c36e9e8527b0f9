"""The parsers of untrusted text, fuzzed with hypothesis: manifests, marker files,
registration configs, ``--tissue KEY=VALUE`` settings, journals and item IDs.

Each may accept its input or raise an ``HsafastError``; nothing else. The default tier
runs ``EXAMPLES`` inputs per parser (and per input form), the slow tier ``SLOW_EXAMPLES``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsafast.errors import HsafastError

EXAMPLES = 200
SLOW_EXAMPLES = 2000

COLUMNS = ["case_id", "patient_id", "he_path", "ihc_path", "marker", "label", "extra", ""]
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_cell = st.one_of(_text, st.sampled_from(["", "..", "/etc/passwd", "a.svs", "ki67", '"', ","]))


def _csv_text() -> st.SearchStrategy[str]:
    header = st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=8)
    rows = st.lists(st.lists(_cell, max_size=8), max_size=6)
    separators = st.sampled_from([",", ";", ",,", "\t"])
    return st.builds(
        lambda h, r, sep: "\n".join(sep.join(cells) for cells in [h, *r]), header, rows, separators
    )


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), _text)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)
        ),
        max_leaves=12,
    )


def _only_hsafast_errors(parse: Callable[[Any], object]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        try:
            parse(value)
        except HsafastError:
            pass

    return check


def _run(strategy: st.SearchStrategy[Any], parse: Callable[[Any], object], examples: int) -> None:
    test = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(strategy)(_only_hsafast_errors(parse)))
    test()


def _in_file(suffix: str, parse: Callable[[Path], object]) -> Callable[[bytes | str], object]:
    folder = Path(tempfile.mkdtemp(prefix="hsafast-fuzz-"))

    def from_file(content: bytes | str) -> object:
        path = folder / f"input{suffix}"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return parse(path)

    return from_file


def manifest_cases(examples: int) -> None:
    from hsafast.manifest import read_manifest

    parse = _in_file(".csv", read_manifest)
    _run(st.binary(max_size=400), parse, examples)
    _run(_csv_text(), parse, examples)


def marker_cases(examples: int) -> None:
    from hsafast.stain.markers import load_markers

    _run(st.binary(max_size=300), _in_file(".toml", load_markers), examples)
    as_json = _in_file(".json", load_markers)
    _run(_json_values().map(lambda v: json.dumps(v)), as_json, examples)
    markers = st.dictionaries(_text, _json_values(), max_size=4)
    spec = st.fixed_dictionaries(
        {"compartment": _json_values(), "classes": _json_values(), "binary": _json_values()},
        optional={"cutoffs": _json_values(), "rule": _json_values(), "min_cells": _json_values()},
    )
    structured = st.dictionaries(_text, st.one_of(spec, markers), min_size=1, max_size=3)
    _run(structured.map(lambda m: json.dumps({"markers": m})), as_json, examples)


def registration_config_cases(examples: int) -> None:
    from hsafast.cohort.tasks import registration_config
    from hsafast.registration import RegistrationConfig

    keys = st.sampled_from([*RegistrationConfig.__dataclass_fields__, "structure_quantile", "x"])
    configs = st.dictionaries(keys, _json_values(), max_size=5).map(json.dumps)
    parse = _in_file(".json", registration_config)
    _run(configs, parse, examples)
    _run(st.binary(max_size=200), parse, examples)


def tissue_setting_cases(examples: int) -> None:
    from hsafast._config import config_from_assignments
    from hsafast.tissue import TissueConfig

    def parse(pairs: list[str]) -> object:
        return config_from_assignments(TissueConfig, pairs, "--tissue")

    keys = st.sampled_from([*TissueConfig.__dataclass_fields__, "nope", "", "mpp-"])
    values = st.one_of(_text, st.sampled_from(["inf", "nan", "-1", "1e400", "none", "true", "0"]))
    pairs = st.lists(
        st.builds(lambda k, v, s: f"{k}{s}{v}", keys, values, st.sampled_from(["=", ""]))
    )
    _run(pairs, parse, examples)


def journal_cases(examples: int) -> None:
    from hsafast.cohort import item_states
    from hsafast.cohort.journal import JOURNAL_NAME

    folder = Path(tempfile.mkdtemp(prefix="hsafast-fuzz-"))

    def parse(content: bytes) -> object:
        (folder / JOURNAL_NAME).write_bytes(content)
        return item_states(folder)

    lines = st.lists(
        st.one_of(
            st.binary(max_size=60),
            _json_values().map(lambda v: json.dumps(v).encode()),
            st.fixed_dictionaries(
                {"v": st.just(1), "kind": st.just("item")},
                optional={k: _json_values() for k in ("task", "item", "status", "outputs", "uses")},
            ).map(lambda v: json.dumps(v).encode()),
        ),
        max_size=6,
    ).map(lambda ls: b"\n".join(ls))
    _run(lines, parse, examples)


def id_cases(examples: int) -> None:
    from hsafast.cohort.ids import MAX_ID_LENGTH, sanitize_id

    def parse(name: str) -> None:
        safe = sanitize_id(name)
        assert 0 < len(safe) <= MAX_ID_LENGTH and Path(safe).name == safe
        assert safe not in (".", "..") and safe.isascii() and not safe.startswith((".", "-"))

    _run(st.text(max_size=300), parse, examples)


PARSERS = [manifest_cases, marker_cases, registration_config_cases, tissue_setting_cases]
PARSERS += [journal_cases, id_cases]


@pytest.mark.parametrize("cases", PARSERS, ids=lambda f: f.__name__)
def test_parsers_raise_only_hsafast_errors(cases: Callable[[int], None]) -> None:
    cases(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("cases", PARSERS, ids=lambda f: f.__name__)
def test_parsers_raise_only_hsafast_errors_long(cases: Callable[[int], None]) -> None:
    cases(SLOW_EXAMPLES)
