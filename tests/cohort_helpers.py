"""Tasks and a driver for the cohort runner's fault tests.

The tasks are the real tissue and tile steps with one addition: on a chosen item they
kill the process that runs them (SIGKILL, as the kernel's OOM killer or a node loss
would), once per marker file. ``python tests/cohort_helpers.py OUT POINT ITEM`` runs a
tissue batch over the real test slides and kills the whole run at POINT of item ITEM:

- ``before``: as the item's step starts (nothing written);
- ``during``: after the step wrote half of an output file into staging;
- ``moving``: after the first of the item's files was renamed into the output folder;
- ``unrecorded``: with all its files in place, before its journal line is written;
- ``recorded``: right after its journal line is written;
- ``none``: no kill (the reference run, and the resume).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize
from hsafast.cohort.task import ItemContext
from hsafast.cohort.tasks import TileTask, TissueTask

DATA = Path(__file__).resolve().parent / "data"

#: Real slides of three formats (SVS from the package, DICOM, JPEG at 5% scale).
SLIDES = (
    Path(__file__).resolve().parent.parent / "hsafast" / "data" / "CMU-1-Small-Region.svs",
    DATA / "multiframe_camelyon_challenge_image.dcm",
    DATA / "paired" / "birl_mouse_lung_lesion" / "Izd2-29-041-w35_HE.jpg",
)

#: The JPEG records no pixel size: 5% scale of a 20x scan is about 10 um/px.
PIXEL = PixelSize(slide_mpp=10.0)


def kill_self() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _first_time(marker_dir: str | None, item_id: str) -> bool:
    if marker_dir is None:
        return True
    marker = Path(marker_dir) / f"killed-{item_id}"
    if marker.exists():
        return False
    marker.touch()
    return True


@dataclass
class KillingTileTask(TileTask):
    """The tile step, killing its process on ``kill_item`` (once per ``marker_dir``)."""

    kill_item: str = ""
    marker_dir: str | None = None
    always: bool = False

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        if item.id == self.kill_item and (self.always or _first_time(self.marker_dir, item.id)):
            kill_self()
        super().run(item, ctx)


@dataclass
class KillingTissueTask(TissueTask):
    """The tissue step, killing its process at ``point`` of ``kill_item``."""

    kill_item: str = ""
    point: str = "none"

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        if item.id == self.kill_item and self.point == "before":
            kill_self()
        super().run(item, ctx)
        if item.id == self.kill_item and self.point == "during":
            staged = ctx.path("geojson")
            data = staged.read_bytes()
            staged.write_bytes(data[: len(data) // 2])
            kill_self()


@dataclass
class FailingSetupTask(TileTask):
    """A step whose worker preparation fails (a model that is not there)."""

    def setup(self) -> None:
        from hsafast.errors import ConfigError

        raise ConfigError("no model bundle here", "/nonexistent/bundle")


def install_driver_kill(point: str, item_id: str, out: Path) -> None:
    """Kill this process at ``point`` of the driver's commit of ``item_id``."""
    from hsafast.cohort import journal, runner

    if point == "moving":
        real_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            real_replace(src, dst, *args, **kwargs)
            target = Path(dst)
            if target.parent == out and target.name.startswith(item_id + "."):
                kill_self()

        runner.os.replace = replace  # type: ignore[attr-defined]
    elif point in ("unrecorded", "recorded"):
        real_append = journal.Journal.append

        def append(self: journal.Journal, record: dict[str, Any]) -> None:
            mine = record.get("kind") == "item" and record.get("item") == item_id
            if mine and point == "unrecorded":
                kill_self()
            real_append(self, record)
            if mine and point == "recorded":
                kill_self()

        journal.Journal.append = append  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    from hsafast.cohort import run_cohort, slide_items

    out, point, item_id = Path(argv[0]), argv[1], argv[2]
    items = slide_items(SLIDES)
    task = KillingTissueTask(pixel=PIXEL, kill_item=item_id, point=point)
    if point in ("moving", "unrecorded", "recorded"):
        install_driver_kill(point, item_id, out)
        task = KillingTissueTask(pixel=PIXEL)
    report = run_cohort(task, items, out)
    print(json.dumps({"done": report.done, "skipped": report.skipped}))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
