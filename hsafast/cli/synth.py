"""``hsafast synth OUT``: simulate a cohort of paired H&E/IHC slides with ground truth."""

from __future__ import annotations

import argparse
import sys
from collections import Counter


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
    p = sub.add_parser(
        "synth",
        help="simulate paired H&E/IHC slides with known ground truth (for tests and benchmarks)",
    )
    p.add_argument("out", help="output folder (manifest.csv, slides/, truth/)")
    p.add_argument("--cases", type=int, default=6, help="number of cases (default: 6)")
    p.add_argument("--size", type=_size, default=(4096, 4096), help="slide size N or WxH")
    p.add_argument("--markers", default="ki67,p53,pdl1", help="comma-separated, cycled over cases")
    p.add_argument(
        "--predictability",
        type=float,
        default=0.8,
        help="how strongly H&E morphology determines expression, 0..1 (0: negative control)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpp", type=float, default=0.5, help="pixel size at level 0 (um/px)")
    p.add_argument("--ki67-cutoff", type=float, default=20.0, help="Ki-67 index cut-off (%%)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.errors import HsafastError
    from hsafast.synth import make_cohort

    markers = tuple(m.strip() for m in args.markers.split(",") if m.strip())
    bar = None
    task = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
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
            slide_size=args.size,
            predictability=args.predictability,
            seed=args.seed,
            mpp=args.mpp,
            ki67_cutoff=args.ki67_cutoff / 100.0,
            workers=args.workers,
            progress=progress,
        )
    except HsafastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.stop()
    labels = Counter(c.label for c in cohort.cases)
    patients = len({c.patient_id for c in cohort.cases})
    made = len(cohort.cases) - cohort.skipped
    print(
        f"hsafast: {made} cases simulated ({cohort.skipped} already done), {patients} patients, "
        f"labels {dict(sorted(labels.items()))}, {cohort.bytes_written / 1e6:.1f} MB "
        f"in {cohort.seconds:.1f} s -> {cohort.manifest_path}"
    )
    return 0
