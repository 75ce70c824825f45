"""Write pickles in the official snapshot format from networks created inside a test.

The official training code pickles each network through a ``persistence`` helper: the pickle calls
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src,
class_name, state}``, where ``state`` is the module ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``,
...) plus the constructor arguments ``_init_args`` / ``_init_kwargs``. Dictionaries of options are
``dnnlib.util.EasyDict``.

To write those globals we register throw-away modules ``torch_utils.persistence`` and ``dnnlib.util`` in
``sys.modules`` while pickling (:func:`official_globals`); their functions are never called when reading,
because the safe unpickler maps the names to its own stubs.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import torch

#: the persistence format version written by the official code
PERSISTENCE_VERSION = 6
#: the location record of a storage in torch's legacy serialisation, as written on a GPU and on the CPU
_CUDA_TAG = b"X\x06\x00\x00\x00cuda:0"
_CPU_TAG = b"X\x03\x00\x00\x00cpu"


def _never_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the fake official module must never be executed when reading")


@contextlib.contextmanager
def official_globals() -> Iterator[None]:
    """Temporarily provide ``torch_utils.persistence`` and ``dnnlib.util`` so that pickle can name their
    globals.

    Re-entering while active is a no-op (the same ``EasyDict`` class must be used throughout one pickle).
    """
    if getattr(sys.modules.get("torch_utils.persistence"), "is_fake", False):
        yield
        return
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _never_called
    persistence.is_fake = True
    _never_called.__module__ = "torch_utils.persistence"
    _never_called.__qualname__ = _never_called.__name__ = "_reconstruct_persistent_obj"
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    with registered_modules(
        {
            "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"),
            "dnnlib.util": util,
        }
    ):
        yield


@contextlib.contextmanager
def registered_modules(modules: dict[str, Any]) -> Iterator[None]:
    """Put ``modules`` (name -> module object) into ``sys.modules`` for the duration; restore what was there."""
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def easy_dict(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` as a ``dnnlib.util.EasyDict`` (only inside :func:`official_globals`), nested dicts too."""
    cls = sys.modules["dnnlib.util"].EasyDict
    return cls({k: easy_dict(v) if isinstance(v, dict) else v for k, v in d.items()})


class Persistent:
    """Pickles like an object of a class decorated by the official persistence helper."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str = "") -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        meta = {
            "type": "class",
            "version": PERSISTENCE_VERSION,
            "module_src": self.module_src,
            "class_name": self.class_name,
            "state": self.state,
        }
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def module_state(
    module: torch.nn.Module,
    init_kwargs: dict[str, Any] | None = None,
    rename: dict[str, str] | None = None,
    module_src: str = "",
) -> Persistent:
    """The official-style pickle object of ``module`` and its children (all buffers stored persistently).

    Args:
        module: a network whose module names equal the official ones.
        init_kwargs: the official constructor arguments of the top-level module.
        rename: class name to write per dotted path (default: the Python class name).
        module_src: the "source code" to store (must be ignored by the reader).
    """
    rename = rename or {}

    def build(mod: torch.nn.Module, path: str, kwargs: dict[str, Any]) -> Persistent:
        state: dict[str, Any] = {
            "training": False,
            "_parameters": collections.OrderedDict((k, v) for k, v in mod._parameters.items()),
            "_buffers": collections.OrderedDict((k, v) for k, v in mod._buffers.items()),
            "_non_persistent_buffers_set": set(),
            "_forward_hooks": collections.OrderedDict(),
            "_modules": collections.OrderedDict(
                (name, build(child, f"{path}{name}.", {})) for name, child in mod._modules.items()
            ),
            "_init_args": (),
            "_init_kwargs": easy_dict(kwargs),
        }
        return Persistent(rename.get(path, type(mod).__name__), state, module_src)

    return build(module, "", init_kwargs or {})


class _CudaTaggingPickler(pickle.Pickler):
    """Writes every tensor storage as if it had been saved from ``cuda:0``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.TypedStorage):
            fn, (data,) = obj.__reduce__()
            assert _CPU_TAG in data
            return fn, (data.replace(_CPU_TAG, _CUDA_TAG),)
        return NotImplemented


def dumps(obj: Any, protocol: int = 4, cuda_tags: bool = False) -> bytes:
    """Pickle ``obj`` (built with :func:`module_state` / :func:`easy_dict`) with the official global names."""
    with official_globals():
        buf = io.BytesIO()
        pickler = (
            _CudaTaggingPickler(buf, protocol=protocol)
            if cuda_tags
            else pickle.Pickler(buf, protocol=protocol)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation notices
            pickler.dump(obj)
        return buf.getvalue()


def snapshot(
    G: Persistent | None,
    D: Persistent | None,
    G_ema: Persistent | None,
    augment_p: float | None = None,
    training_set_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The top-level dict of an official training snapshot (call inside :func:`official_globals`)."""
    pipe = None
    if augment_p is not None:
        pipe_state = {
            "training": True,
            "_parameters": collections.OrderedDict(),
            "_buffers": collections.OrderedDict(p=torch.tensor(augment_p)),
            "_non_persistent_buffers_set": set(),
            "_modules": collections.OrderedDict(),
            "_init_args": (),
            "_init_kwargs": easy_dict({"xflip": 1, "rotate90": 1, "xint": 1}),
        }
        pipe = Persistent("AugmentPipe", pipe_state)
    tsk = easy_dict(training_set_kwargs) if training_set_kwargs is not None else None
    return {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": pipe, "training_set_kwargs": tsk}
