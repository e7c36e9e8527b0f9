"""``hsafast train --config run.toml``: train slide mode, patch mode and the baselines.

The trainer (``hsafast.trainer``) is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hsafast train`` (also those of ``python -m hsafast.trainer``)."""
    p.add_argument("--config", required=True, metavar="FILE", help="run configuration (TOML)")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default: the config's 'out')"
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N or auto (default: the config's)"
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels and data order (default: the config's)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="start afresh: remove the run's models and checkpoints (prepared cases stay)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "train",
        "train HistoStainAlign (slide and patch modes, baselines) with cross-validation",
        "Train on a cohort manifest as a TOML configuration describes (docs/training.md);\n"
        "writes a run directory: models/ (a model bundle per mode, marker and fold),\n"
        "predictions/, embeddings/ and run.json. An interrupted run resumes from its\n"
        "checkpoints. Several processes: torchrun --nproc-per-node N -m hsafast.trainer\n"
        "--config run.toml",
        """
hsafast train --config run.toml
hsafast train --config run.toml --out runs/seed1 --device cuda --deterministic
""",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.trainer.cli import run as train_run

    return train_run(args)
