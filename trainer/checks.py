"""Checks of a run's inputs, so that bad input fails before any training starts.

Each check raises a ``TrainingDataError`` (an ``HsafastError``) that names the file and the
reason: missing slides, cases without an IHC pair, markers the configuration does not know,
a marker with a single class, feature files that disagree in width or encoder or hold NaN,
and encoder weights that do not fit the architecture.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hsafast.errors import HsafastError
from hsafast.manifest import Case, Manifest

from .config import TrainConfig

__all__ = ["TrainingDataError", "check_encoder", "check_labels", "check_manifest"]


class TrainingDataError(HsafastError, ValueError):
    """The training inputs cannot train a model (named file, stated reason)."""


def check_manifest(manifest: Manifest, config: TrainConfig) -> list[Case]:
    """The manifest's cases for the configured markers, after checking files and pairs."""
    from hsafast.stain import get_marker

    present = sorted({c.marker for c in manifest.cases})
    wanted = list(config.markers) or present
    absent = [m for m in wanted if m not in present]
    if absent:
        raise TrainingDataError(
            f"markers {absent} of the configuration have no case in the manifest "
            f"(it has {present})",
            manifest.path,
        )
    unknown = [m for m in present if m not in wanted]
    if unknown:
        raise TrainingDataError(
            f"the manifest has cases of markers {unknown} that the configuration does not "
            f"train (markers = {wanted}); add them to markers or drop those rows",
            manifest.path,
        )
    if config.data.labels == "stain":
        for marker in wanted:
            try:
                get_marker(marker)
            except HsafastError as exc:
                raise TrainingDataError(
                    f"labels are read from the stain, but marker {marker!r} has no stain "
                    f"definition: {exc.reason}",
                    manifest.path,
                ) from None
    cases = list(manifest.cases)
    missing: list[str] = []
    for case in cases:
        if case.ihc_path == case.he_path:
            raise TrainingDataError(
                f"case {case.case_id}: the H&E and the IHC slide are the same file "
                "(a case needs its IHC pair)",
                case.he_path,
            )
        for path in (case.he_path, case.ihc_path):
            if not Path(path).is_file():
                missing.append(f"{case.case_id}: {path}")
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise TrainingDataError(
            f"{len(missing)} slide files are missing: {'; '.join(missing[:5])}{more}",
            manifest.path,
        )
    if config.data.labels == "manifest":
        unlabelled = [c.case_id for c in cases if not c.label]
        if unlabelled:
            raise TrainingDataError(
                f"data.labels = 'manifest' but cases {unlabelled[:5]} have no label",
                manifest.path,
            )
    patients = {c.patient_id for c in cases}
    if len(patients) < config.folds:
        raise TrainingDataError(
            f"{config.folds} folds need at least {config.folds} patients, the manifest has "
            f"{len(patients)}",
            manifest.path,
        )
    return cases


def check_labels(
    labels: Sequence[tuple[str, str, str]], classes: Sequence[str], where: Path
) -> None:
    """Every marker needs both classes; ``labels`` are (case_id, marker, label)."""
    per_marker: dict[str, Counter[str]] = {}
    for case_id, marker, label in labels:
        if label not in classes:
            raise TrainingDataError(
                f"case {case_id}: label {label!r} is not one of {list(classes)}", where
            )
        per_marker.setdefault(marker, Counter())[label] += 1
    for marker, counts in sorted(per_marker.items()):
        if len(counts) < 2:
            (only,) = counts
            raise TrainingDataError(
                f"marker {marker!r}: all {counts[only]} cases are {only!r}; a classifier "
                "needs cases of both classes",
                where,
            )


def check_encoder(config: TrainConfig) -> None:
    """Build the configured encoder once: unknown names and ill-fitting weights fail here."""
    from hsafast.errors import EncoderError

    from .patch_mode import build_encoder

    try:
        build_encoder(config.encoder, seed=config.seed)
    except EncoderError as exc:
        raise TrainingDataError(
            f"encoder {config.encoder.name!r}: {exc.reason}", exc.path
        ) from None
