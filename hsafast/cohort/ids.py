"""Work item IDs: stable, unique and safe to use as file names.

An ID becomes the stem of every output file of its item, so it must never name a
path outside the output folder, a hidden file, or a file name the system refuses.
Sanitising is lossy ("case 1" and "case_1" would meet), so an ID that had to be
changed carries a short hash of the original; a loose file's ID carries a hash of
its resolved path, so that two ``slide.svs`` in different folders stay apart.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from hsafast.errors import InvalidParameterError

#: Characters kept in an ID; everything else becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Longest ID: leaves room for the longest output suffix (".overlay.png", ".field.npz")
#: and a temporary prefix within the 255-byte file name limit of common file systems.
MAX_ID_LENGTH = 120

#: Hex digits of the hashes appended to IDs (32 bits: collisions among the IDs of one
#: run are checked, not assumed away).
HASH_LENGTH = 8


def short_hash(*parts: str) -> str:
    """A short, stable hex digest of strings (any code points, undecodable names included)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:HASH_LENGTH]


def sanitize_id(name: str) -> str:
    """``name`` as a safe file name stem; a hash of the original is appended if it changed.

    Kept: ASCII letters, digits, ``.``, ``_`` and ``-`` (leading dots and dashes dropped,
    so an ID is never hidden, ``..`` or an option). Anything else, path separators and
    NUL included, becomes ``_``. Too long names are cut and keep the hash.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".-")
    if cleaned == name and 0 < len(cleaned) <= MAX_ID_LENGTH:
        return cleaned
    keep = MAX_ID_LENGTH - HASH_LENGTH - 1
    stem = cleaned[:keep].rstrip(".-_") or "_"
    return f"{stem}-{short_hash(name)}"


def path_id(path: str | os.PathLike[str]) -> str:
    """ID of a loose slide file: its readable name plus a hash of its resolved path."""
    resolved = Path(path).resolve()
    return _with_hash(_readable(resolved), short_hash(str(resolved)))


def pair_id(he_path: str | os.PathLike[str], ihc_path: str | os.PathLike[str]) -> str:
    """ID of a loose H&E/IHC pair: both readable names plus a hash of both resolved paths."""
    he, ihc = Path(he_path).resolve(), Path(ihc_path).resolve()
    return _with_hash(f"{_readable(he)}__{_readable(ihc)}", short_hash(str(he), str(ihc)))


def case_item_id(case_id: str, part: str) -> str:
    """ID of one slide or pair of a manifest case: ``<case_id>.<marker>`` or ``<case_id>.HE``."""
    return f"{sanitize_id(case_id)}.{sanitize_id(part)}"


def check_unique(ids: Iterable[str]) -> None:
    """Raise if two IDs are equal, or equal but for letter case (they would share files
    on case-insensitive file systems)."""
    seen: dict[str, str] = {}
    for item_id in ids:
        key = item_id.casefold()
        if key in seen:
            other = seen[key]
            how = "twice" if other == item_id else f"and {other!r} (they differ only in case)"
            raise InvalidParameterError(
                f"item ID {item_id!r} {how}: their output files would collide"
            )
        seen[key] = item_id


def _readable(path: Path) -> str:
    name = path.stem
    if name.lower().endswith(".ome"):  # "slide.ome.tiff"
        name = name[:-4]
    stem = _UNSAFE.sub("_", name).strip("._-")
    return stem[: MAX_ID_LENGTH // 2] or "slide"


def _with_hash(readable: str, digest: str) -> str:
    return f"{readable[: MAX_ID_LENGTH - HASH_LENGTH - 1]}-{digest}"
