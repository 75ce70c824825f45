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

__all__ = ["Network", "NETWORK_CLASSES", "register_network", "config_from_dict", "network_from_description"]

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
