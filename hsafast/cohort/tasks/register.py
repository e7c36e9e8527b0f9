"""``register``: each IHC section registered to its H&E neighbour."""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, ItemFailed, Task
from hsafast.errors import ConfigError

if TYPE_CHECKING:
    from hsafast.registration import RegistrationConfig


def _default_config() -> RegistrationConfig:
    from hsafast.registration import RegistrationConfig

    return RegistrationConfig()


@dataclass
class RegisterTask(Task):
    """Per pair: ``ID.json`` (the registration and its verdict), ``ID.field.npz`` (the
    displacement field, when one is kept) and, on request, ``ID.overlay.png``. A failed
    verdict is kept (JSON and overlay) and the pair recorded as failed."""

    name: ClassVar[str] = "register"

    config: RegistrationConfig = field(default_factory=_default_config)
    overlay: bool = False
    """Also write an overlay PNG of the registered pair."""
    pixel: PixelSize = field(default_factory=PixelSize)

    def params(self) -> Mapping[str, Any]:
        return {"registration": self.config, "overlay": self.overlay, **self.pixel.params()}

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        return {
            "registration": f"{item.id}.json",
            "field": f"{item.id}.field.npz",
            "overlay": f"{item.id}.overlay.png",
        }

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        from hsafast.registration import register
        from hsafast.registration.overlay import overlay_png

        he_path, ihc_path = item.inputs["he"], item.inputs["ihc"]
        with (
            open_item_slide(he_path, self.pixel, ctx) as he,
            open_item_slide(ihc_path, self.pixel, ctx) as ihc,
        ):
            reg = register(he, ihc, self.config)
            if self.overlay:
                overlay_png(os.fspath(ctx.path("overlay")), he, ihc, reg)
        reg.save(ctx.path("registration"))
        ctx.record(verdict=reg.verdict)
        if not reg.ok:
            raise ItemFailed(reg.reason, ihc_path)


def registration_config(
    path: str | os.PathLike[str] | None = None, **changes: Any
) -> RegistrationConfig:
    """A RegistrationConfig from a JSON file of its fields (unknown keys rejected), with
    ``changes`` applied; every problem is a ConfigError naming the file."""
    from hsafast.registration import RegistrationConfig

    values: Any = {}
    where = None if path is None else Path(path)
    if where is not None:
        try:
            values = json.loads(where.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"cannot read the registration config: {exc.strerror}", where
            ) from None
        except ValueError as exc:
            raise ConfigError(f"the registration config is not JSON: {exc}", where) from None
        if not isinstance(values, dict):
            raise ConfigError("the registration config must be a JSON object", where)
    values = {**values, **changes}
    _check_types(RegistrationConfig, values, where)
    try:
        return RegistrationConfig.from_dict(values)
    except ConfigError as exc:
        raise ConfigError(exc.reason, where) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"bad registration setting: {exc}", where) from None


def _check_types(cls: type, values: dict[str, Any], where: Path | None) -> None:
    """JSON values of the right kind for the dataclass fields they set (unknown keys are
    left to the class, which names them)."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        kind = hints.get(str(key))
        if kind is None or _fits(value, kind):
            continue
        raise ConfigError(f"{key} must be {_describe(kind)}, got {value!r}", where)


def _fits(value: Any, kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin is tuple or kind is tuple:
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    return True


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(kind, "None" if kind is type(None) else getattr(kind, "__name__", str(kind)))
