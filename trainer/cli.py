"""Command line of the trainer: ``hsafast train --config run.toml`` and, for several
processes, ``torchrun --nproc-per-node N -m hsafast.trainer --config run.toml``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def run(args: argparse.Namespace) -> int:
    """Train; print the one-line summary. Errors are one line naming the file and reason."""
    from hsafast.errors import HsafastError

    from .config import load_config
    from .run import train

    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("hsafast.trainer")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        overrides = {
            "out": os.path.abspath(args.out) if args.out else None,
            "device": args.device,
            "deterministic": args.deterministic,
            "resume": args.resume,
        }
        summary = train(load_config(args.config, **overrides))
    except HsafastError as exc:
        print(f"hsafast train: error: {exc}", file=sys.stderr)
        return 1
    if rank == 0:
        print(summary.line())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from hsafast.cli.train import add_arguments

    parser = argparse.ArgumentParser(prog="python -m hsafast.trainer", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
