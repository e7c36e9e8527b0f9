"""What every command shares: its parser, the common options, and running a task.

One meaning per flag across commands:

- ``--out DIR``: the output folder (with ``journal.jsonl`` and ``failures.csv``).
- ``--target-mpp``: the tiles' pixel size; ``--tile-size``: their side in pixels.
- ``--slide-mpp``: the level-0 pixel size of files that record none;
  ``--force-slide-mpp`` uses it for every file, replacing recorded ones.
- ``--workers``, ``--executor``, ``--ray-address``: where items run.
- ``--recursive``: search folders' subfolders; ``--overwrite``: redo finished items.
- ``-v/--verbose``: before or after the command.

A new batch command needs ``add_command`` plus the ``add_*`` groups it uses, builds a
:class:`hsafast.cohort.Task` and returns ``run_task(args, task, items, ...)``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsafast.cohort import Executor, RunReport, Task, WorkItem
    from hsafast.cohort.pixels import PixelSize
    from hsafast.tissue import TissueConfig

#: Python parameter names in library messages -> the flag a command-line user sets.
CLI_NAMES = {
    "force_slide_mpp": "--force-slide-mpp",
    "slide_mpp": "--slide-mpp",
    "target_mpp": "--target-mpp",
    "tile_size": "--tile-size",
    "mpp": "--slide-mpp",
    "overwrite": "--overwrite",
    "recursive": "--recursive",
    "marker": "--marker",
    "workers": "--workers",
    "ray_address": "--ray-address",
}

_PYTHON_HINT = re.compile(r"\b(?:pass )?([a-z_]+)=(?:\.\.\.|True)")

#: How many failures are printed; the rest are in failures.csv.
MAX_PRINTED_FAILURES = 20


def speak_cli(text: str) -> str:
    """Rewrite a library hint such as ``pass mpp=...`` as the flag a CLI user gives."""

    def flag(match: re.Match[str]) -> str:
        name = CLI_NAMES.get(match.group(1))
        if name is None:
            return match.group(0)
        return f"give {name}" if match.group(0).startswith("pass ") else name

    return _PYTHON_HINT.sub(flag, text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and shows every meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and not any(default is empty for empty in (None, False, argparse.SUPPRESS))
            and not isinstance(default, list)
            and action.option_strings
            and action.nargs != 0  # flags: their default is "not given"
        ):
            text += " (default: %(default)s)"
        return text


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A sub-command parser with the shared formatter, ``-v`` and usage examples."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug, tracebacks)"
    )
    return p


def add_inputs(p: argparse.ArgumentParser, what: str = "slide files, folders or manifests") -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=f"{what} (cohort manifest: CSV)")
    p.add_argument("--recursive", action="store_true", help="search folders' subfolders too")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--out, --overwrite and where the items run."""
    from hsafast.cohort import EXECUTORS

    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo finished items; replaces outputs made with other parameters",
    )
    p.add_argument("--workers", type=positive_int, default=1, metavar="N", help="items run at once")
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: threads of this process; process: local processes; ray: Ray actors",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --executor ray: 'auto' or ray://host:port (default: a local Ray cluster)",
    )


def add_pixel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slide-mpp",
        type=positive_float,
        default=None,
        metavar="UM",
        help="level-0 pixel size (um/px) of files that record none",
    )
    p.add_argument(
        "--force-slide-mpp",
        action="store_true",
        help="use --slide-mpp for every file, replacing recorded pixel sizes",
    )


def add_tile_options(p: argparse.ArgumentParser, magnification: bool = False) -> None:
    """--target-mpp (the tiles' pixel size) and --tile-size."""
    target = p.add_mutually_exclusive_group() if magnification else p
    target.add_argument(
        "--target-mpp",
        type=positive_float,
        default=None,
        metavar="UM",
        help="tile pixel size, um/px (default: 0.5, 20x)",
    )
    if magnification:
        target.add_argument(
            "--magnification",
            type=positive_float,
            default=None,
            metavar="X",
            help="tile magnification instead of --target-mpp (20 = 0.5 um/px)",
        )
    p.add_argument("--tile-size", type=positive_int, default=256, metavar="PX", help="tile side")


def add_min_tissue(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-tissue",
        type=fraction,
        default=0.25,
        metavar="F",
        help="least tissue fraction of a kept tile, 0..1",
    )


def add_reader_threads(p: argparse.ArgumentParser) -> None:
    """Threads decoding one slide's tiles (``--workers`` is slides at once)."""
    p.add_argument(
        "--reader-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads decoding a slide's tiles (default: every core)",
    )


def add_tissue_options(p: argparse.ArgumentParser) -> None:
    """``--tissue KEY=VALUE`` for any field of TissueConfig (listed in the help)."""
    from hsafast.tissue import TissueConfig

    keys = ", ".join(f"{f.name}={_default(f)}" for f in fields(TissueConfig))
    p.add_argument(
        "--tissue",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"tissue detection setting, repeatable; keys and defaults: {keys}",
    )


def tissue_config(args: argparse.Namespace) -> TissueConfig:
    from hsafast._config import config_from_assignments
    from hsafast.tissue import TissueConfig

    return config_from_assignments(TissueConfig, args.tissue, "--tissue")


def pixel_size(args: argparse.Namespace) -> PixelSize:
    from hsafast.cohort.pixels import PixelSize
    from hsafast.errors import InvalidParameterError

    if args.force_slide_mpp and args.slide_mpp is None:
        raise InvalidParameterError("--force-slide-mpp needs --slide-mpp")
    return PixelSize(args.slide_mpp, force=args.force_slide_mpp)


def executor(args: argparse.Namespace) -> Executor:
    from hsafast.cohort import make_executor
    from hsafast.errors import InvalidParameterError

    if args.ray_address is not None and args.executor != "ray":
        raise InvalidParameterError("--ray-address needs --executor ray")
    return make_executor(args.executor, args.workers, ray_address=args.ray_address)


def run_task(
    args: argparse.Namespace, task: Task, items: list[WorkItem], noun: str, verb: str
) -> int:
    """Run ``task`` over ``items`` into ``--out``; print failures and a one-line summary."""
    from hsafast.cohort import run_cohort

    report = run_cohort(
        task,
        items,
        args.out,
        executor=executor(args),
        overwrite=args.overwrite,
        progress=RichProgress(f"{task.name}: {noun}s"),
        reason_text=speak_cli,
    )
    print_failures(report)
    print(summary(report, noun, verb, args))
    return report.exit_code


def summary(report: RunReport, noun: str, verb: str, args: argparse.Namespace) -> str:
    """One line of words, e.g. ``hsafast tile: 3 slides tiled, 1 already done, 0 failed``."""
    parts = [f"{_count(len(report.done), noun)} {verb}"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} already done")
    parts.append(f"{len(report.failed)} failed")
    text = (
        f"hsafast {report.task}: {', '.join(parts)} in {report.seconds:.1f} s -> {report.out_dir}"
    )
    if report.removed:
        text += (
            f"; removed the outputs of {_count(report.removed, noun)} made with other parameters"
        )
    if getattr(args, "force_slide_mpp", False):
        text += f"; pixel size forced to {args.slide_mpp} um/px for every slide"
    if report.failed:
        text += f"; failures in {report.out_dir / 'failures.csv'}"
    return text


def print_failures(report: RunReport) -> None:
    for failure in report.failed[:MAX_PRINTED_FAILURES]:
        print(f"error: {failure.path}: {failure.reason}", file=sys.stderr)
    if len(report.failed) > MAX_PRINTED_FAILURES:
        more = len(report.failed) - MAX_PRINTED_FAILURES
        print(f"error: ... and {more} more (see failures.csv)", file=sys.stderr)


class RichProgress:
    """A rich progress bar on a terminal (stderr); nothing when output is redirected."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._bar: Any = None
        self._task: Any = None

    def start(self, total: int, skipped: int) -> None:
        if total < 2 or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        label = self.what + (f" ({skipped} already done)" if skipped else "")
        self._task = self._bar.add_task(label, total=total)

    def advance(self, item_id: str, ok: bool) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class RichStatus:
    """A rich spinner with the current step's words on a terminal (stderr); nothing when
    output is redirected. Use as a context manager; call it with each new message."""

    def __init__(self) -> None:
        self._status: Any = None

    def __enter__(self) -> RichStatus:
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status("")
            self._status.start()
        return self

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return "?"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
