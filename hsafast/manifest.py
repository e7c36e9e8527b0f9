"""Cohort manifests: one row per case and marker, splits by patient.

Columns: ``case_id, patient_id, he_path, ihc_path, marker, label``; ``label`` may
be empty (it can be derived from the IHC slide). A case stained for several markers
has one row per marker (same ``case_id`` and ``patient_id``); ``(case_id, marker)``
is unique. Relative paths are resolved against the manifest's folder, so a cohort
directory can be moved as a whole. Every problem is a ``ConfigError`` naming the
manifest and the line.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from hsafast.errors import ConfigError

REQUIRED_COLUMNS = ("case_id", "patient_id", "he_path", "ihc_path", "marker")
OPTIONAL_COLUMNS = ("label",)

#: Longest field accepted (characters): IDs and paths, with room for deep folders.
MAX_FIELD = 4096


@dataclass(frozen=True)
class Case:
    case_id: str
    patient_id: str
    he_path: Path
    ihc_path: Path
    marker: str
    label: str | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    cases: tuple[Case, ...]

    def slide_paths(self) -> list[Path]:
        """Every H&E and IHC slide of the cohort, each once, in manifest order."""
        seen: dict[Path, None] = {}
        for case in self.cases:
            seen.setdefault(case.he_path)
            seen.setdefault(case.ihc_path)
        return list(seen)

    def patients(self) -> list[str]:
        return sorted({c.patient_id for c in self.cases})


def is_manifest(path: Path) -> bool:
    """True for a readable CSV file whose header has the manifest's columns."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return set(REQUIRED_COLUMNS) <= {h.strip() for h in header}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a cohort manifest CSV."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the manifest: {exc.strerror}", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the manifest is not UTF-8 text (byte {exc.start})", path) from None
    if "\0" in text:
        raise ConfigError("the manifest holds a NUL character", path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ConfigError(f"the manifest is not valid CSV: {exc}", path) from None
    if not rows:
        raise ConfigError("the manifest is empty", path)
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"the manifest lacks columns {missing} (has {header})", path)
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if unknown or duplicated:
        what = f"unknown columns {unknown}" if unknown else f"repeated columns {duplicated}"
        raise ConfigError(f"the manifest has {what}", path)
    cases: list[Case] = []
    seen: set[tuple[str, str]] = set()
    patient_of: dict[str, str] = {}
    for line, fields in enumerate(rows[1:], start=2):
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != len(header):
            raise ConfigError(
                f"line {line}: {len(fields)} fields, the header has {len(header)}", path
            )
        row = {h: f.strip() for h, f in zip(header, fields, strict=True)}
        for column, value in row.items():
            if len(value) > MAX_FIELD:
                raise ConfigError(f"line {line}: {column} longer than {MAX_FIELD} characters", path)
        for column in REQUIRED_COLUMNS:
            if not row[column]:
                raise ConfigError(f"line {line}: empty {column}", path)
        case_id, marker = row["case_id"], row["marker"].lower()
        if (case_id, marker) in seen:
            raise ConfigError(f"line {line}: case {case_id!r} has marker {marker!r} twice", path)
        seen.add((case_id, marker))
        patient = patient_of.setdefault(case_id, row["patient_id"])
        if patient != row["patient_id"]:
            raise ConfigError(
                f"line {line}: case {case_id!r} belongs to patient {patient!r} on an earlier "
                f"line, not {row['patient_id']!r}",
                path,
            )
        cases.append(
            Case(
                case_id=case_id,
                patient_id=row["patient_id"],
                he_path=_resolve(path, row["he_path"]),
                ihc_path=_resolve(path, row["ihc_path"]),
                marker=marker,
                label=row.get("label") or None,
            )
        )
    if not cases:
        raise ConfigError("the manifest lists no cases", path)
    return Manifest(path=path, cases=tuple(cases))


def _resolve(manifest: Path, value: str) -> Path:
    try:
        return (manifest.parent / value).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"unusable path {value!r}: {exc}", manifest) from None


def write_manifest(path: str | os.PathLike[str], cases: list[Case]) -> None:
    """Write a manifest with paths relative to its own folder (atomically)."""
    from hsafast._fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        for c in cases:
            writer.writerow(
                [
                    c.case_id,
                    c.patient_id,
                    os.path.relpath(c.he_path, path.parent),
                    os.path.relpath(c.ihc_path, path.parent),
                    c.marker,
                    c.label or "",
                ]
            )
