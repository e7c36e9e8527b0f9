"""Work items: what one step of a cohort run works on, and how inputs become items.

Inputs are slide files, folders of slides and cohort manifests (CSV). A loose file's
item is named after the file plus a hash of its resolved path; a manifest case's
items are named ``<case_id>.HE`` (its H&E slide) and ``<case_id>.<marker>`` (its IHC
slide, or the H&E/IHC pair). See :mod:`hsafast.cohort.ids`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hsafast.cohort.ids import case_item_id, check_unique, pair_id, path_id
from hsafast.errors import InvalidParameterError

#: Files a folder scan treats as slides.
SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".svslide",
        ".bif",
        ".dcm",
        ".png",
        ".jpg",
        ".jpeg",
    }
)

#: FeatureFiles (precomputed tile features), which some steps take in place of slides.
FEATURE_SUFFIXES = frozenset({".h5", ".hdf5"})

#: The stains a manifest contributes slides of: its H&E and its IHC column.
STAINS = ("he", "ihc")


@dataclass(frozen=True, eq=False)
class WorkItem:
    """One unit of work: a slide, or an H&E/IHC pair, with what the manifest says of it."""

    id: str
    """Stable, unique, file-name-safe; the stem of every output file of the item."""

    inputs: Mapping[str, Path]
    """Role -> input file (``"slide"``; or ``"he"`` and ``"ihc"`` for a pair), resolved."""

    meta: Mapping[str, str] = field(default_factory=dict)
    """From the manifest, where there is one: ``case_id``, ``patient_id``, ``marker``,
    ``label``, ``stain`` (``"HE"`` or ``"IHC"``). Empty for loose files."""

    @property
    def path(self) -> Path:
        """The item's first input (the slide, or the pair's H&E)."""
        return next(iter(self.inputs.values()))

    def __repr__(self) -> str:
        return f"WorkItem({self.id!r}, {dict(self.inputs)})"


def slide_items(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = False,
    stains: Sequence[str] = STAINS,
    suffixes: Collection[str] = SLIDE_SUFFIXES,
) -> list[WorkItem]:
    """One item per slide from files, folders and manifests (each file once, first wins).

    Folders are searched for files with one of ``suffixes`` (lower case), in
    subfolders too with ``recursive``; a ``.csv`` input is read as a cohort manifest and
    contributes the slides of the given ``stains``. A path that does not exist stays an
    item (its failure is recorded per item). An empty selection is an error.
    """
    from hsafast.manifest import read_manifest

    bad = [s for s in stains if s not in STAINS]
    if bad or not stains:
        raise InvalidParameterError(f"stains must be some of {STAINS}, got {list(stains)}")
    items: dict[Path, WorkItem] = {}
    for entry in _as_paths(inputs):
        if entry.is_dir():
            found = _scan(entry, recursive, suffixes)
            if not found:
                raise InvalidParameterError(_empty_folder(entry, recursive, suffixes), entry)
            for path in found:
                items.setdefault(path, WorkItem(path_id(path), {"slide": path}))
        elif entry.suffix.lower() == ".csv":
            for case in read_manifest(entry).cases:
                meta = {"case_id": case.case_id, "patient_id": case.patient_id}
                if "he" in stains:
                    he = {**meta, "stain": "HE"}
                    item = WorkItem(case_item_id(case.case_id, "HE"), {"slide": case.he_path}, he)
                    items.setdefault(case.he_path, item)
                if "ihc" in stains:
                    ihc = {**meta, "stain": "IHC", "marker": case.marker, "label": case.label or ""}
                    item_id = case_item_id(case.case_id, case.marker)
                    items.setdefault(
                        case.ihc_path, WorkItem(item_id, {"slide": case.ihc_path}, ihc)
                    )
        else:
            path = entry.resolve()
            items.setdefault(path, WorkItem(path_id(path), {"slide": path}))
    return _checked(list(items.values()))


def pair_items(inputs: Sequence[str | os.PathLike[str]]) -> list[WorkItem]:
    """H&E/IHC pairs: two slide files (H&E first), or one or more cohort manifests."""
    from hsafast.manifest import read_manifest

    paths = _as_paths(inputs)
    manifests = [p for p in paths if p.suffix.lower() == ".csv"]
    if manifests and len(manifests) == len(paths):
        items = []
        for manifest in manifests:
            for case in read_manifest(manifest).cases:
                meta = {
                    "case_id": case.case_id,
                    "patient_id": case.patient_id,
                    "marker": case.marker,
                    "label": case.label or "",
                }
                pair = {"he": case.he_path, "ihc": case.ihc_path}
                items.append(WorkItem(case_item_id(case.case_id, case.marker), pair, meta))
        return _checked(items)
    if len(paths) == 2 and not manifests:
        he, ihc = (p.resolve() for p in paths)
        return [WorkItem(pair_id(he, ihc), {"he": he, "ihc": ihc})]
    raise InvalidParameterError(
        f"expected two slides (H&E, then IHC) or cohort manifests, got {len(paths)} inputs"
    )


def _as_paths(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    paths = []
    for entry in inputs:
        text = os.fspath(entry)
        if not text or "\0" in text:
            raise InvalidParameterError(f"not a usable path: {text!r}")
        paths.append(Path(text))
    if not paths:
        raise InvalidParameterError("no inputs given (slide files, folders or cohort manifests)")
    return paths


def _scan(folder: Path, recursive: bool, suffixes: Collection[str]) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = []
    for path in folder.glob(pattern):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative):
            continue  # hidden files and folders (ours included: .hsafast staging)
        if path.suffix.lower() in suffixes and path.is_file():
            found.append(path.resolve())
    return sorted(found)


def _empty_folder(folder: Path, recursive: bool, suffixes: Collection[str]) -> str:
    where = "in it or its subfolders" if recursive else "in it (recursive=True searches subfolders)"
    return f"no slide files ({', '.join(sorted(suffixes))}) {where}"


def _checked(items: list[WorkItem]) -> list[WorkItem]:
    if not items:
        raise InvalidParameterError("the inputs select no slides")
    check_unique(item.id for item in items)
    return items
