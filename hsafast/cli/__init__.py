"""The ``hsafast`` command line: a thin layer over the public Python API.

Each sub-command lives in its own module with ``add_parser(subparsers)`` that
registers it and sets ``func`` (returning the process exit code); the options that
commands share, and running a batch on the cohort runner, are in
:mod:`hsafast.cli.common`. Exit codes: 0 done, 1 some items failed (or the run could
not write its outputs), 2 bad command line or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
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
        epilog="'hsafast COMMAND --help' describes a command's options, with examples.",
    )
    parser.add_argument("--version", action="version", version=f"hsafast {__version__}")
    parser.add_argument(
        "-v", "--verbose", dest="verbose_top", action="count", default=0, help="more logging"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hsafast.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose_top + getattr(args, "verbose", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except BaseException as exc:  # every way out ends in one line (tracebacks with -vv)
        return _report(exc, args.command, verbose)


def _report(exc: BaseException, command: str, verbose: int) -> int:
    from hsafast.cli.common import speak_cli
    from hsafast.cohort import MixedOutputsError, RunInterrupted
    from hsafast.errors import (
        BundleError,
        ConfigError,
        EncoderError,
        HsafastError,
        InvalidParameterError,
    )

    prefix = f"hsafast {command}"
    if isinstance(exc, RunInterrupted):
        report = exc.report
        print(
            f"{prefix}: interrupted; {len(report.done)} items finished in this run are recorded "
            f"in {report.out_dir / 'journal.jsonl'}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    if isinstance(exc, SystemExit):
        raise exc
    if verbose >= 2:
        raise exc
    if isinstance(exc, HsafastError):
        print(f"{prefix}: error: {speak_cli(str(exc))}", file=sys.stderr)
        # raised before any item ran: the command line names something unusable
        usage = (InvalidParameterError, ConfigError, MixedOutputsError, BundleError, EncoderError)
        return 2 if isinstance(exc, usage) else 1
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prefix}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    if isinstance(exc, Exception):
        print(
            f"{prefix}: internal error: {type(exc).__name__}: {exc} "
            "(run with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1
    raise exc


def console() -> None:
    """The ``hsafast`` program: ``main``, then exit with its status.

    After an interrupt, worker threads still inside native code would abort the
    interpreter's teardown (C++ frames cannot be unwound from under them), so the
    process ends without it: the journal and outputs are already on disk.
    """
    code = main()
    busy = [t for t in threading.enumerate() if t.daemon and t.name.startswith("hsafast-")]
    if code == 130 and any(t.is_alive() for t in busy):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
