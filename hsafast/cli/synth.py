"""``hsafast synth --out DIR``: simulate a cohort of paired H&E/IHC slides with ground truth."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from hsafast.cli import common


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "synth",
        "simulate paired H&E/IHC slides with known ground truth (for tests and benchmarks)",
        "Writes DIR/manifest.csv, DIR/slides/ (pyramidal JPEG TIFF pairs) and DIR/truth/.\n"
        "A test pattern with known truth, not a substitute for real tissue. Finished\n"
        "cases are kept on a rerun.",
        """
hsafast synth --out cohort/ --cases 24 --slide-size 8192
hsafast synth --out negative/ --cases 12 --predictability 0 --markers ki67
""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--cases", type=common.positive_int, default=6, help="number of cases")
    p.add_argument(
        "--slide-size", type=_size, default="4096", metavar="N|WxH", help="slide size in pixels"
    )
    p.add_argument("--markers", default="ki67,p53,pdl1", help="comma-separated, cycled over cases")
    p.add_argument(
        "--predictability",
        type=float,
        default=0.8,
        help="how strongly H&E morphology determines expression, 0..1 (0: negative control)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--scan-mpp",
        type=float,
        default=0.5,
        metavar="UM",
        help="level-0 pixel size the simulated slides record (um/px)",
    )
    p.add_argument("--ki67-cutoff", type=float, default=20.0, help="Ki-67 index cut-off (%%)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.synth import make_cohort

    markers = tuple(m.strip() for m in args.markers.split(",") if m.strip())
    bar = None
    task = None
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("simulating slides", total=None)

    def progress(done: int, total: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, completed=done, total=total)

    try:
        cohort = make_cohort(
            args.out,
            args.cases,
            markers=markers,
            slide_size=args.slide_size,
            predictability=args.predictability,
            seed=args.seed,
            mpp=args.scan_mpp,
            ki67_cutoff=args.ki67_cutoff / 100.0,
            workers=args.workers,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.stop()
    labels = Counter(c.label for c in cohort.cases)
    label_text = ", ".join(f"{n} {label}" for label, n in sorted(labels.items()))
    patients = len({c.patient_id for c in cohort.cases})
    made = len(cohort.cases) - cohort.skipped
    print(
        f"hsafast synth: {made} cases simulated, {cohort.skipped} already done, "
        f"{patients} patients, labels {label_text}, {cohort.bytes_written / 1e6:.1f} MB "
        f"in {cohort.seconds:.1f} s -> {cohort.manifest_path}"
    )
    return 0
