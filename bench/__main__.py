"""Run one benchmark: ``python -m bench NAME [options]`` (``python -m bench`` lists them).

Every benchmark module defines ``main(argv) -> int``, runs hsafast and its peers
side by side on the same inputs, prints a short table and writes JSON under
``bench/out/``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in names:
        print("usage: python -m bench NAME [options]\nbenchmarks: " + ", ".join(names))
        return 0 if not argv or argv[0] in {"-h", "--help"} else 2
    return int(importlib.import_module(f"bench.{argv[0]}").main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
