"""``hsafast register HE IHC --out DIR`` or ``hsafast register MANIFEST --out DIR``.

Writes ``DIR/<case>.json`` (plus ``<case>.field.npz`` with the displacement
field) per pair; a failed verdict is written too and counted as a failure. A
rerun skips cases whose JSON exists (``--overwrite`` redoes them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register IHC sections to their H&E neighbours")
    p.add_argument("inputs", nargs="+", help="HE IHC (two slides), or a cohort manifest CSV")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--backend", default="auto", help="reader backend (default: auto)")
    p.add_argument("--mpp", type=float, default=None, help="pixel size of both slides (um/px)")
    p.add_argument("--config", type=Path, default=None, help="JSON file of RegistrationConfig")
    p.add_argument("--affine-only", action="store_true", help="skip the non-rigid stage")
    p.add_argument("--overlay", action="store_true", help="also write <case>.overlay.png")
    p.add_argument("--overwrite", action="store_true", help="redo cases already registered")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):  # -> RegistrationConfig
    from hsafast.errors import ConfigError
    from hsafast.registration import RegistrationConfig

    values: dict = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read registration config: {exc}", args.config) from exc
        if not isinstance(values, dict):
            raise ConfigError("registration config must be a JSON object", args.config)
    if args.affine_only:
        values["nonrigid"] = False
    try:
        return RegistrationConfig.from_dict(values)
    except ConfigError as exc:
        raise ConfigError(exc.reason, args.config) from exc


def run(args: argparse.Namespace) -> int:
    from hsafast._fileio import safe_id
    from hsafast.cli.batch import run_batch
    from hsafast.errors import InvalidParameterError, RegistrationError
    from hsafast.manifest import is_manifest, read_manifest
    from hsafast.registration import register
    from hsafast.registration.overlay import overlay_png
    from hsafast.slides import open_slide

    config = _config(args)
    if len(args.inputs) == 1 and is_manifest(Path(args.inputs[0])):
        cases = {c.case_id: (c.he_path, c.ihc_path) for c in read_manifest(args.inputs[0]).cases}
    elif len(args.inputs) == 2:
        he, ihc = (Path(p) for p in args.inputs)
        cases = {he.stem: (he, ihc)}
    else:
        raise InvalidParameterError(
            "give two slides (HE IHC) or one cohort manifest CSV", args.inputs[0]
        )
    args.out.mkdir(parents=True, exist_ok=True)

    def step(key: Path) -> bool:
        he_path, ihc_path = cases[str(key)]
        target = args.out / f"{safe_id(str(key))}.json"
        if target.exists() and not args.overwrite:
            return False
        with (
            open_slide(he_path, args.backend, args.mpp) as he_slide,
            open_slide(ihc_path, args.backend, args.mpp) as ihc_slide,
        ):
            reg = register(he_slide, ihc_slide, config)
            if args.overlay:
                overlay_png(str(target.with_suffix(".overlay.png")), he_slide, ihc_slide, reg)
        reg.save(target)
        if not reg.ok:
            raise RegistrationError(reg.reason, key)
        return True

    report = run_batch([Path(k) for k in cases], step, what="pairs registered", out_dir=args.out)
    return report.exit_code
