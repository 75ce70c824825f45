"""The base of every styleforge network: a frozen dataclass config captured at construction.

A network is rebuilt from ``{"_class_name": ..., "config": {...}}`` (what :meth:`Network.describe` returns and what
``config.json`` stores), never unpickled. Config parsing is strict: an unknown key is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, TypeVar

import torch.nn as nn

from styleforge.utils.errors import UserInputError

__all__ = [
    "Network",
    "NETWORK_CLASSES",
    "register_network",
    "config_from_dict",
    "network_from_description",
    "check_img_aspect",
    "aspect_image_size",
    "image_size",
    "COND_ENCODINGS",
    "check_cond_encoding",
]

C = TypeVar("C")

#: class name -> network class, filled by :func:`register_network`
NETWORK_CLASSES: dict[str, type[Network]] = {}


def register_network(cls: type[Network]) -> type[Network]:
    """Class decorator: make ``cls`` rebuildable from ``config.json`` under its class name."""
    if cls.__name__ in NETWORK_CLASSES and NETWORK_CLASSES[cls.__name__] is not cls:
        raise RuntimeError(f"two network classes are registered as {cls.__name__}")
    NETWORK_CLASSES[cls.__name__] = cls
    return cls


def _coerce(value: Any, hint: Any) -> Any:
    """Turn JSON values back into the dataclass field types (lists -> tuples, nested dataclasses)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return config_from_dict(arg, value)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return tuple(value)
    return value


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys raise an error that lists the valid keys."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserInputError(
            f"Unknown {cls.__name__} option(s) {unknown}; valid options are: {', '.join(sorted(fields))}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k)) for k, v in data.items()}
    return cls(**kwargs)


class Network(nn.Module):
    """An ``nn.Module`` whose constructor takes one frozen dataclass config.

    Subclasses set ``config_class`` and call ``super().__init__(config)`` first.
    """

    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @classmethod
    def from_config(cls, config: Any | dict[str, Any]) -> Network:
        """Build from a config instance or a (strictly parsed) dict."""
        if isinstance(config, dict):
            config = config_from_dict(cls.config_class, config)
        return cls(config)

    def set_ops_impl(self, impl: str) -> Network:
        """Choose the ops implementation (``"ref"``, ``"fast"``, ``"compile"`` or ``"auto"``) for every layer.

        Layers that call ops keep an ``ops_impl`` attribute (default ``"auto"``) and pass it as ``impl=``; this sets
        it on the whole module tree. The state lives on the modules, not in a global flag. Returns ``self``.
        """
        from styleforge.ops._common import IMPLS

        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        for m in self.modules():
            if hasattr(m, "ops_impl"):
                m.ops_impl = impl
        return self

    def describe(self) -> dict[str, Any]:
        """``{"_class_name": ..., "config": {...}}``: everything needed to rebuild this network (JSON-safe)."""
        return {"_class_name": type(self).__name__, "config": dataclasses.asdict(self.config)}


def network_from_description(desc: dict[str, Any]) -> Network:
    """Inverse of :meth:`Network.describe`."""
    import styleforge.models  # noqa: F401  (registers every network class)

    name = desc.get("_class_name")
    if name not in NETWORK_CLASSES:
        raise UserInputError(
            f"Unknown network class {name!r} in config.json; known classes: {', '.join(sorted(NETWORK_CLASSES))}. "
            "Was the file written by a newer styleforge?"
        )
    return NETWORK_CLASSES[name].from_config(desc.get("config", {}))


# ------------------------------------------------------------------------------------------------------------
# Non-square images: a network's ``img_resolution`` is its longer side, ``img_aspect`` (W, H) its shape.


def check_img_aspect(img_aspect: Any) -> None:
    """Raise a :class:`UserInputError` unless ``img_aspect`` is ``None`` or a pair of positive integers."""
    if img_aspect is None:
        return
    ok = isinstance(img_aspect, tuple) and len(img_aspect) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in img_aspect):
        raise UserInputError(
            f"img_aspect must be None (square) or a (width, height) pair of positive integers such as (4, 3), "
            f"got {img_aspect!r}."
        )


def aspect_image_size(img_resolution: int, img_aspect: tuple[int, int] | None) -> tuple[int, int]:
    """``(W, H)`` of an image whose longer side is ``img_resolution`` and whose aspect ratio is ``W:H = img_aspect``.

    ``None`` (or equal sides) means square. The shorter side must come out as a whole number of pixels.
    """
    check_img_aspect(img_aspect)
    if img_aspect is None or img_aspect[0] == img_aspect[1]:
        return img_resolution, img_resolution
    aw, ah = img_aspect
    longer = max(aw, ah)
    if (img_resolution * aw) % longer or (img_resolution * ah) % longer:
        raise UserInputError(
            f"img_aspect {aw}:{ah} at img_resolution {img_resolution} gives a fractional side "
            f"({img_resolution * aw / longer:g} x {img_resolution * ah / longer:g}); pick a ratio whose shorter "
            "side is a whole number of pixels (e.g. 4:3, 3:4, 2:1)."
        )
    return img_resolution * aw // longer, img_resolution * ah // longer


def image_size(net: nn.Module) -> tuple[int, int]:
    """``(W, H)`` of the images a generator makes (or a discriminator reads): non-square aware.

    Networks without ``img_width``/``img_height`` attributes (PGGAN, converted foreign ones) are square with side
    ``img_resolution``.
    """
    res = int(net.img_resolution)
    return int(getattr(net, "img_width", res)), int(getattr(net, "img_height", res))


#: what a conditional network's label vector c holds (see styleforge.data.labels)
COND_ENCODINGS = ("class", "multi-label", "continuous")


def check_cond_encoding(encoding: Any) -> None:
    """Raise a :class:`UserInputError` unless ``encoding`` is one of :data:`COND_ENCODINGS`."""
    if encoding not in COND_ENCODINGS:
        raise UserInputError(f"cond_encoding must be one of {', '.join(COND_ENCODINGS)}, got {encoding!r}.")
