"""Cohort manifests: one row per case, splits by patient.

Columns: ``case_id, patient_id, he_path, ihc_path, marker, label``; ``label`` may
be empty (it can be derived from the IHC slide). Relative paths are resolved
against the manifest's folder, so a cohort directory can be moved as a whole.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from hsafast.errors import ConfigError

REQUIRED_COLUMNS = ("case_id", "patient_id", "he_path", "ihc_path", "marker")
OPTIONAL_COLUMNS = ("label",)


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
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return set(REQUIRED_COLUMNS) <= {h.strip() for h in header}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a cohort manifest CSV."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read manifest: {exc}", path) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"manifest lacks columns {missing}", path)
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise ConfigError(f"manifest has unknown columns {unknown}", path)
    cases = []
    seen_ids: set[str] = set()
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        for column in REQUIRED_COLUMNS:
            if not row[column]:
                raise ConfigError(f"line {line}: empty {column}", path)
        if row["case_id"] in seen_ids:
            raise ConfigError(f"line {line}: duplicate case_id {row['case_id']!r}", path)
        seen_ids.add(row["case_id"])
        cases.append(
            Case(
                case_id=row["case_id"],
                patient_id=row["patient_id"],
                he_path=(path.parent / row["he_path"]).resolve(),
                ihc_path=(path.parent / row["ihc_path"]).resolve(),
                marker=row["marker"].lower(),
                label=row.get("label") or None,
            )
        )
    return Manifest(path=path, cases=tuple(cases))


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
