"""Named presets: ``create_model("stylegan2", img_resolution=256)``.

A preset is a function registered with :func:`register_preset` that returns a :class:`Preset`, i.e. the configs of a
generator and a discriminator. Named variants are data, not subclasses; ``*-tiny`` variants exist for tests.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from styleforge.models.base import Network, config_from_dict
from styleforge.utils.errors import UserInputError

__all__ = ["Preset", "register_preset", "get_preset", "list_models", "create_model"]

# Model modules that define presets; imported on first use of the registry.
_MODEL_MODULES = (
    "styleforge.models.stylegan2",
    "styleforge.models.stylegan3",
    "styleforge.models.stylegan_xl",
    "styleforge.models.pggan",
    "styleforge.models.projected_discriminator",
)


@dataclass(frozen=True)
class Preset:
    """A named configuration: generator and discriminator classes with their configs."""

    name: str
    G_class: type[Network]
    G_config: Any
    D_class: type[Network] | None = None
    D_config: Any = None
    description: str = ""


_PRESETS: dict[str, Callable[[], Preset]] = {}
_loaded = False


def register_preset(name: str) -> Callable[[Callable[[], Preset]], Callable[[], Preset]]:
    """Decorator registering a zero-argument function that returns a :class:`Preset`."""

    def deco(fn: Callable[[], Preset]) -> Callable[[], Preset]:
        if name in _PRESETS:
            raise RuntimeError(f"preset {name!r} registered twice")
        _PRESETS[name] = fn
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODEL_MODULES:  # every module must import: a missing one is a broken install, never skipped
        importlib.import_module(mod)
    _loaded = True


def list_models(pattern: str = "") -> list[str]:
    """Names of all presets, optionally only those containing ``pattern``."""
    _load_all()
    return sorted(n for n in _PRESETS if pattern in n)


def get_preset(name: str) -> Preset:
    """The :class:`Preset` registered under ``name``."""
    _load_all()
    if name not in _PRESETS:
        raise UserInputError(f"Unknown model {name!r}; available: {', '.join(list_models())}.")
    return _PRESETS[name]()


def _apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    data = dataclasses.asdict(config)
    data.update(overrides)
    return config_from_dict(type(config), data)


def create_model(name: str, net: str = "G", **overrides: Any) -> Network:
    """Build a network from a named preset.

    Args:
        name: preset name, e.g. ``"stylegan2"``, ``"stylegan2-tiny"``, ``"stylegan3-t"``; see :func:`list_models`.
        net: ``"G"`` for the generator (default) or ``"D"`` for the discriminator.
        **overrides: config fields to change (``img_resolution=256``, ``c_dim=10``, ...). Unknown names raise an
            error listing the valid ones.
    """
    preset = get_preset(name)
    if net == "G":
        cls, cfg = preset.G_class, preset.G_config
    elif net == "D":
        if preset.D_class is None:
            raise UserInputError(f"Preset {name!r} has no discriminator.")
        cls, cfg = preset.D_class, preset.D_config
    else:
        raise UserInputError(f"net must be 'G' or 'D', got {net!r}")
    return cls(_apply_overrides(cfg, overrides))
