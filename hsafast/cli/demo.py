"""``hsafast demo [--out DIR]``: the whole method end to end on the embedded default."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    from hsafast.demo.config import DemoConfig

    defaults = DemoConfig()
    p = common.add_command(
        sub,
        "demo",
        "run the whole method end to end on the bundled slide and simulated cohorts",
        "The bundled real H&E slide (or --slide) through tissue detection, tiling and tile\n"
        "reading; a simulated paired H&E/IHC cohort and a negative control (predictability 0)\n"
        "through stain-derived labels, registration, training of slide mode, patch mode and\n"
        "the classification-only baseline, scoring of held-out slides and the evaluation\n"
        "report; a closing table beside the paper's weighted F1. About 5 minutes on 2 idle cores.\n"
        "DIR must be new, empty or a previous demo's folder (which is replaced); it is\n"
        "removed again if the demo fails. DIR/README.md says what each file is.",
        """
hsafast demo --out hsafast-demo
hsafast demo --out demo2 --slide my_slide.svs
hsafast demo --out small --cases 12 --control-cases 12
""",
    )
    p.add_argument(
        "--out", type=Path, default=Path("hsafast-demo"), metavar="DIR", help="output folder"
    )
    # None: DemoConfig's default (the config rule builds and checks the whole config)
    p.add_argument(
        "--cases", type=int, metavar="N", help=f"simulated cases (default {defaults.cases})"
    )
    p.add_argument(
        "--control-cases",
        type=int,
        metavar="N",
        help=f"cases of the negative control, predictability 0 (default {defaults.control_cases})",
    )
    p.add_argument(
        "--slide-size",
        type=int,
        metavar="PX",
        help=f"side of each simulated slide at 0.5 um/px (default {defaults.slide_size})",
    )
    p.add_argument(
        "--seed", type=int, help=f"simulation and training seed (default {defaults.seed})"
    )
    p.add_argument(
        "--slide",
        type=str,
        metavar="FILE",
        help="a real slide (that records its pixel size) instead of the bundled CMU-1",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"cohorts run at once (default {defaults.workers}: the cohort and the control in "
        "parallel, one thread each)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast._config import config_from_mapping
    from hsafast.demo import DemoConfig, closing_table, run_demo
    from hsafast.demo.outputs import checks, reading
    from hsafast.evaluation import format_table

    flags = ("cases", "control_cases", "slide_size", "seed", "slide", "workers")
    given = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    config = config_from_mapping(DemoConfig, given, section="hsafast demo")
    with _Progress() as progress:
        result = run_demo(args.out, config, progress)
    print()
    print(format_table(closing_table(result)))
    for line in reading(result):
        print(line)
    print()
    for line in checks(result):
        print(f"- {line}")
    print(
        f"hsafast demo: whole method in {result.seconds:.0f} s ({result.cpu_seconds:.0f} s CPU "
        f"on {result.cores} cores); outputs in {result.out_dir}, start with results.md"
    )
    return 0


class _Progress:
    """Closing lines of each step on stderr; on a terminal also a live status per cohort."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.status: dict[str, str] = {}
        self.live: Any = None

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live("", console=Console(stderr=True), transient=True, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, pipeline: str, message: str, final: bool) -> None:
        if not final:
            if self.live is not None:
                self.status[pipeline] = message
                self.live.update(self._status_text())
            return
        self.status.pop(pipeline, None)
        minutes, seconds = divmod(int(time.perf_counter() - self.t0), 60)
        line = f"[{minutes:2d}:{seconds:02d}] {pipeline:7} {message}"
        if self.live is not None:
            from rich.text import Text

            self.live.console.print(Text(line))
            self.live.update(self._status_text())
        else:
            print(line, file=sys.stderr, flush=True)

    def _status_text(self) -> Any:
        from rich.text import Text

        return Text("\n".join(f"        {k:7} {v}" for k, v in self.status.items()))
