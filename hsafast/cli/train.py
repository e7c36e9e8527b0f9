"""``hsafast train --config run.toml``: train slide mode, patch mode and the baselines.

The trainer (``hsafast.trainer``) is imported only when the command runs.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hsafast train`` (also those of ``python -m hsafast.trainer``)."""
    p.add_argument("--config", required=True, help="run configuration (TOML)")
    p.add_argument("--out", default=None, help="run directory (default: the config's 'out')")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: config)")
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels and data order (default: config)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="start afresh: remove the run's models and checkpoints (prepared cases stay)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train HistoStainAlign (slide and patch modes, baselines) with cross-validation",
        description="Train on a cohort manifest as a TOML configuration describes; writes a "
        "run directory (models/, predictions/, embeddings/, run.json). Several processes: "
        "torchrun --nproc-per-node N -m hsafast.trainer --config run.toml",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.trainer.cli import run as train_run

    return train_run(args)
