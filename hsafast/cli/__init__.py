"""The ``hsafast`` command line: a thin layer over the public Python API.

Each sub-command lives in its own module with ``add_parser(subparsers)`` that
registers it and sets ``func`` (returning the process exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: Sub-command modules under hsafast.cli, in the order ``--help`` lists them.
COMMANDS = (
    "info",
    "tissue",
    "tile",
    "embed",
    "quantify",
    "register",
    "synth",
    "train",
    "score",
    "evaluate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    from hsafast import __version__

    parser = argparse.ArgumentParser(
        prog="hsafast",
        description="Predict IHC biomarker status from H&E whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"hsafast {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hsafast.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
