"""Read NVIDIA's official training pickles without their code and without running anything from the file.

An official snapshot (``network-snapshot-*.pkl`` of StyleGAN2-ADA, StyleGAN3 or StyleGAN-XL) is a plain pickle
of ``dict(G=..., D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...)``. Every network in it was
pickled through the official ``persistence`` helper, which stores the module's *source code* next to its state
and, on load, executes that source to rebuild the class. We never do that. :class:`SafeUnpickler` resolves
pickle globals from a fixed allow-list only:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a :class:`PersistentObject` (class name, version,
  constructor arguments, module ``__dict__``); the stored ``module_src`` is dropped unread;
- ``torch.storage._load_from_bytes`` -> a storage, read by
  ``torch.load(weights_only=True, map_location="cpu")`` (storages saved on a GPU load on the CPU);
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` -> a tensor / ``nn.Parameter`` on that storage;
- ``numpy.(_)core.multiarray._reconstruct`` and ``scalar``, ``numpy.(_)core.numeric._frombuffer``,
  ``numpy.dtype``, ``numpy.ndarray``, ``dill._dill._create_array`` -> numpy arrays, scalars and dtypes (never
  of object dtype);
- ``collections.OrderedDict``, ``builtins.set`` -> themselves; ``dnnlib.util.EasyDict`` -> a plain ``dict``;
  ``torch.Size`` -> itself, for sequences of ints only;
- ``builtins.getattr`` / ``builtins.setattr`` -> versions that act only on the loader's own stand-ins (a stub's
  "attribute" is another recording stub, an assignment is recorded in the stub's state) and refuse any other
  object, so ``getattr(os, 'system')`` and the like never resolve (dill writes StyleGAN-XL's DeiT bound
  methods through them);
- ``torch.nn.modules.sparse.Embedding`` -> a :class:`ModuleStub` holding its state (StyleGAN-XL);
- ``dnnlib.tflib.network.Network`` -> a :class:`TFNetworkStub`: the TensorFlow release's network (StyleGAN2 /
  StyleGAN2-ADA TensorFlow pickles, a tuple ``(G, D, Gs)``), kept as its name, build function name, static
  keyword arguments, components and variables (numpy arrays); its stored ``build_module_src`` (TensorFlow code)
  is dropped unread.

StyleGAN-XL snapshots also hold a projected discriminator built from ordinary ``torch.nn`` modules, timm feature
networks and the ``pg_modules`` / ``feature_networks`` packages of the StyleGAN-XL code (see
:data:`INERT_NAMESPACES`). Their globals become :class:`InertObject` subclasses: recording stubs that keep the
global's name, the arguments the pickle passes and the state it BUILDs, and never import or call the real
thing. Networks holding such stubs are not converted (:mod:`styleforge.convert.official` reports them).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, an unknown class, ...) raises
:class:`UnsafePickleError` naming it, before anything is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import torch

from styleforge.utils.errors import UserInputError

__all__ = [
    "UnsafePickleError",
    "ModuleStub",
    "TFNetworkStub",
    "PersistentObject",
    "SafeUnpickler",
    "safe_load",
    "safe_loads",
    "load_official_pickle",
    "ALLOWED_GLOBALS",
    "InertObject",
    "INERT_NAMESPACES",
    "INERT_GLOBALS",
    "inert_class",
    "find_inert",
]


class UnsafePickleError(UserInputError):
    """The pickle asks for a global outside the allow-list, or holds something we refuse to build."""


def _numpy_multiarray() -> Any:
    """numpy's ``multiarray`` module under its numpy-2 name, or the numpy-1 one."""
    core = getattr(np, "_core", None)
    if core is not None and hasattr(core, "multiarray"):
        return core.multiarray
    return np.core.multiarray  # pragma: no cover  (numpy < 2)


# ------------------------------------------------------------------------------------------------------------
# Stubs for pickled modules.
# ------------------------------------------------------------------------------------------------------------


class ModuleStub:
    """The pickled state of a ``torch.nn.Module`` we did not (and will not) import.

    Attributes:
        class_name: the class name stored in the pickle (``"SynthesisLayer"``, ``"torch.nn.Embedding"``).
        state: the module's ``__dict__`` as pickled: ``_parameters``, ``_buffers``, ``_modules``,
            ``_non_persistent_buffers_set`` and the plain attributes the module's constructor set (``w_dim``,
            ...).
    """

    class_name: str = "?"

    def __init__(self, class_name: str = "?", state: dict[str, Any] | None = None) -> None:
        self.class_name = class_name
        self.state = dict(state or {})

    # BUILD opcode for modules pickled the ordinary way (``torch.nn.Embedding`` in StyleGAN-XL snapshots).
    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}  # (dict state, slot state)
        if not isinstance(state, dict):
            raise UnsafePickleError(
                f"unexpected state of a pickled {self.class_name}: {type(state).__name__}"
            )
        self.state = dict(state)

    # -- module tree --------------------------------------------------------------------------------
    @property
    def parameters_dict(self) -> dict[str, torch.Tensor]:
        """This module's own parameters (``None`` entries dropped)."""
        return {k: v for k, v in self._table("_parameters").items() if v is not None}

    @property
    def buffers_dict(self) -> dict[str, torch.Tensor]:
        """This module's own persistent buffers (``None`` and non-persistent ones dropped)."""
        skip = self.state.get("_non_persistent_buffers_set") or ()
        if not isinstance(skip, (set, frozenset, list, tuple)):
            raise UnsafePickleError(f"a pickled {self.class_name} has a malformed _non_persistent_buffers_set")
        return {k: v for k, v in self._table("_buffers").items() if v is not None and k not in set(skip)}

    @property
    def children(self) -> dict[str, ModuleStub]:
        """Direct sub-modules by attribute name (``None`` entries dropped)."""
        return {k: v for k, v in self._table("_modules").items() if v is not None}

    def _table(self, name: str) -> dict[str, Any]:
        """``state[name]`` (``_parameters``, ``_buffers``, ``_modules``): a dict with string keys, or refused."""
        table = self.state.get(name) or {}
        if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
            raise UnsafePickleError(f"a pickled {self.class_name} has a malformed {name} ({type(table).__name__})")
        return table

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, ModuleStub]]:
        """``(dotted path, stub)`` for this module and every sub-module, depth first, like ``nn.Module``."""
        yield prefix, self
        for name, child in self.children.items():
            if not isinstance(child, ModuleStub):
                raise UnsafePickleError(
                    f"sub-module {prefix + name!r} is a {type(child).__name__}, not a module"
                )
            yield from child.named_modules(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{dotted name: tensor}`` of parameters and persistent buffers, named and ordered as torch
        does.

        E.g. ``"synthesis.b4.conv1.weight"``, ``"mapping.w_avg"``. Tensors are detached plain tensors (not
        ``nn.Parameter``).
        """
        out: dict[str, torch.Tensor] = {}
        for prefix, mod in self.named_modules():
            for name, value in {**mod.parameters_dict, **mod.buffers_dict}.items():
                if not isinstance(value, torch.Tensor):
                    raise UnsafePickleError(
                        f"{prefix + name!r} of a pickled {mod.class_name} is not a tensor"
                    )
                out[prefix + name] = value.detach()
        return out

    def get_submodule(self, path: str) -> ModuleStub:
        """The sub-module at dotted ``path`` (``""`` is this module)."""
        mod: ModuleStub = self
        for part in [p for p in path.split(".") if p]:
            child = mod.children.get(part)
            if child is None:
                raise KeyError(f"{mod.class_name} has no sub-module {part!r} (path {path!r})")
            mod = child
        return mod

    def attr(self, name: str, default: Any = None) -> Any:
        """A plain attribute the module set on itself (``self.w_dim = ...`` in its constructor)."""
        return self.state.get(name, default)

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.state_dict().values())
        return f"<{type(self).__name__} {self.class_name} with {n} numbers>"


class PersistentObject(ModuleStub):
    """What the official ``persistence`` helper pickled, minus its source code.

    Attributes:
        class_name: e.g. ``"Generator"`` (the name alone does not tell StyleGAN2 from StyleGAN3 or XL).
        version: the persistence format version stored in the pickle.
        init_args, init_kwargs: the constructor arguments the object was created with (``z_dim``, ``c_dim``,
            ``mapping_kwargs``, ...), with every ``EasyDict`` turned into a plain ``dict``.
        state: the module ``__dict__`` (see :class:`ModuleStub`).
    """

    def __init__(
        self,
        class_name: str,
        version: int,
        init_args: tuple[Any, ...],
        init_kwargs: dict[str, Any],
        state: dict[str, Any],
    ) -> None:
        super().__init__(class_name, state)
        self.version = version
        self.init_args = init_args
        self.init_kwargs = init_kwargs


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for the official reconstructor: record the meta data, drop ``module_src`` unread."""
    if not isinstance(meta, dict):
        raise UnsafePickleError(f"persistent object meta data is a {type(meta).__name__}, expected a dict")
    if meta.get("type") != "class":
        raise UnsafePickleError(
            f"unsupported persistent object type {meta.get('type')!r} (only 'class' is known)"
        )
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafePickleError("persistent object meta data lacks a class_name string or a state dict")
    state = dict(state)
    init_args = state.pop("_init_args", ())
    init_kwargs = state.pop("_init_kwargs", {})
    return PersistentObject(
        class_name=class_name,
        version=int(meta.get("version", 0)),
        init_args=tuple(init_args) if isinstance(init_args, (list, tuple)) else (),
        init_kwargs=dict(init_kwargs) if isinstance(init_kwargs, dict) else {},
        state=state,
    )


class _EmbeddingStub(ModuleStub):
    """A pickled ``torch.nn.Embedding`` (built by NEWOBJ + BUILD, so it must construct without arguments)."""

    # NEWOBJ may create the instance without calling __init__; the class attribute keeps the name right then.
    class_name = "torch.nn.Embedding"

    def __init__(self) -> None:
        super().__init__("torch.nn.Embedding")


class TFNetworkStub:
    """A network of the TensorFlow releases (``dnnlib.tflib.network.Network``), minus its source code.

    The TensorFlow class pickles its state dict: ``version``, ``name``, ``static_kwargs`` (the build function's
    keyword arguments), ``components`` (sub-networks, e.g. ``mapping`` and ``synthesis``),
    ``build_module_src`` (TensorFlow source, dropped here unread), ``build_func_name`` and ``variables`` (a
    list of ``(name, ndarray)`` pairs in TensorFlow layouts, e.g. ``"4x4/Conv/weight"`` ``[kh, kw, in, out]``).

    Attributes:
        class_name: ``"dnnlib.tflib.network.Network"`` (what the pickle names).
        version, name, build_func_name: as pickled (``4``, ``"Gs"``, ``"G_main"``).
        static_kwargs: the build function's keyword arguments (``resolution``, ``fmap_base``, ...).
        components: ``{name: TFNetworkStub}``.
        variables: ``[(name, ndarray)]`` in the stored order.
    """

    class_name = "dnnlib.tflib.network.Network"

    def __init__(self) -> None:
        self.version = 0
        self.name = ""
        self.build_func_name = ""
        self.static_kwargs: dict[str, Any] = {}
        self.components: dict[str, TFNetworkStub] = {}
        self.variables: list[tuple[str, np.ndarray]] = []

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"a pickled TensorFlow network has a {type(state).__name__} state, not a dict")
        self.version = int(state.get("version", 0))
        self.name = str(state.get("name", ""))
        self.build_func_name = str(state.get("build_func_name", ""))
        static_kwargs = state.get("static_kwargs") or {}
        components = state.get("components") or {}
        variables = state.get("variables") or []
        if not isinstance(static_kwargs, dict) or not isinstance(components, dict):
            raise UnsafePickleError("a pickled TensorFlow network has malformed static_kwargs or components")
        for key, comp in components.items():
            if not isinstance(comp, TFNetworkStub):
                raise UnsafePickleError(
                    f"component {key!r} of the TensorFlow network {self.name!r} is a {type(comp).__name__}"
                )
        if not isinstance(variables, (list, tuple)) or not all(
            isinstance(v, (list, tuple))
            and len(v) == 2
            and isinstance(v[0], str)
            and isinstance(v[1], (np.ndarray, np.generic))
            for v in variables
        ):
            raise UnsafePickleError(
                f"the variables of the TensorFlow network {self.name!r} are not (name, array) pairs"
            )
        self.static_kwargs = dict(static_kwargs)
        self.components = dict(components)
        self.variables = [(name, np.asarray(value)) for name, value in variables]  # scalars -> 0-d arrays
        # state["build_module_src"] (TensorFlow source code) is deliberately never read

    def collect_variables(self) -> dict[str, np.ndarray]:
        """Every variable of this network and its components, named ``"component/.../variable"``.

        E.g. ``"dlatent_avg"``, ``"mapping/Dense0/weight"``, ``"synthesis/4x4/Conv/weight"``.
        """
        out: dict[str, np.ndarray] = {}

        def visit(prefix: str, net: TFNetworkStub) -> None:
            for name, value in net.variables:
                out[prefix + name] = value
            for name, comp in net.components.items():
                visit(f"{prefix}{name}/", comp)

        visit("", self)
        return out

    def __repr__(self) -> str:
        return f"<TFNetworkStub {self.name!r} ({self.build_func_name}) with {len(self.collect_variables())} variables>"


# ------------------------------------------------------------------------------------------------------------
# Inert stubs for the classes of StyleGAN-XL's projected discriminator.
# ------------------------------------------------------------------------------------------------------------

#: module prefixes whose every global (class or function) is read as an inert stub: timm feature networks and
#: the discriminator packages of the StyleGAN-XL / Projected GAN code
INERT_NAMESPACES = ("timm", "pg_modules", "feature_networks")
#: module prefix whose ``torch.nn.Module`` subclasses are read as inert stubs (checked against torch itself)
_TORCH_MODULES_PREFIX = "torch.nn.modules."
#: further single globals read as inert stubs: spectral-norm hook objects (``torch.nn.utils.spectral_norm``),
#: torch's hook wrapper, ``functools.partial`` (a stubbed partial of a stub calls nothing), and the helpers
#: dill uses to write functions by value (the DeiT feature network's forward hooks are closures); those never
#: build a code object or a function here, they only record their arguments
INERT_GLOBALS = frozenset(
    {
        "torch.nn.utils.spectral_norm.SpectralNorm",
        "torch.nn.utils.spectral_norm.SpectralNormStateDictHook",
        "torch.nn.utils.spectral_norm.SpectralNormLoadStateDictPreHook",
        "torch.nn.modules.module._WrappedHook",
        # timm's residual add in the CSM blocks (torch 1.9 location, and the torch >= 1.10 one)
        "torch.nn.quantized.modules.functional_modules.FloatFunctional",
        "torch.ao.nn.quantized.modules.functional_modules.FloatFunctional",
        "functools.partial",
        "dill._dill._create_function",
        "dill._dill._create_code",
        "dill._dill._create_cell",
        "dill._dill._create_namedtuple",
        "dill._dill._create_type",
        "dill._dill._load_type",
        "dill._dill._import_module",
        "dill._dill._get_attr",
        "dill._dill._setattr",
    }
)


class InertObject(ModuleStub):
    """A recording stand-in for a pickled global we do not trust enough to import or call.

    Every such global becomes its own subclass (:func:`inert_class`), so that pickle's NEWOBJ opcode (which
    needs a class) works. Creating, calling or BUILDing an inert object only records what the pickle passed;
    nothing from the file, and nothing named by it, ever runs.

    Attributes:
        global_name: the pickled global, ``"timm.models.efficientnet.EfficientNet"`` (also ``class_name``).
        call_args, call_kwargs: the arguments the pickle constructed or called it with.
        raw_state: the BUILD state exactly as pickled (``None`` if there was none); when it is a module
            ``__dict__`` it is also available as ``state`` (see :class:`ModuleStub`).
    """

    global_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        obj.class_name = cls.global_name
        obj.call_args = args
        obj.call_kwargs = kwargs
        obj.raw_state = None
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were recorded by ``__new__``; nothing else happens."""

    def __setstate__(self, state: Any) -> None:
        self.raw_state = state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] if isinstance(state[1], dict) else {})}
        self.state = dict(state) if isinstance(state, dict) else {}

    def __call__(self, *args: Any, **kwargs: Any) -> InertObject:
        """Calling a stub (dill's ``_load_type(...)(...)``) gives another stub recording the call."""
        return inert_class(f"{self.global_name}(...)")(*args, **kwargs)


def inert_class(global_name: str) -> type[InertObject]:
    """A new :class:`InertObject` subclass standing for ``global_name``."""
    return type("InertObject", (InertObject,), {"global_name": global_name, "__slots__": ()})


def _stub_owner(obj: Any, builtin: str, name: Any) -> str:
    """The global name of the stand-in ``obj`` that ``builtins.getattr`` / ``setattr`` may act on; anything that
    is not one of the loader's own stand-ins (a real module, class, function, tensor, ...) is refused."""
    if not isinstance(name, str) or not name.isidentifier():
        raise UnsafePickleError(f"builtins.{builtin} with the attribute name {name!r} refused")
    if isinstance(obj, ModuleStub):
        return obj.class_name
    if isinstance(obj, type) and issubclass(obj, InertObject) and builtin == "getattr":
        return obj.global_name
    raise UnsafePickleError(
        f"builtins.{builtin}({type(obj).__name__} object, {name!r}) refused: the pickle may look attributes up only "
        "on the loader's own inert stand-ins, never on a real module, class or function."
    )


def _inert_getattr(obj: Any, name: Any, *default: Any) -> InertObject:
    """``builtins.getattr`` as dill's pickles use it (bound methods of the DeiT feature network): allowed only on
    an inert stand-in, and it looks nothing up; the result is a new stub recording ``getattr(owner, name)``."""
    owner = _stub_owner(obj, "getattr", name)
    if default:
        raise UnsafePickleError("builtins.getattr with a default value refused")
    return inert_class(f"getattr({owner}, {name!r})")()


def _inert_setattr(obj: Any, name: Any, value: Any) -> None:
    """``builtins.setattr`` on a stand-in: recorded in its ``state`` (what the attribute assignment would have put
    into the object's ``__dict__``); refused on anything else."""
    _stub_owner(obj, "setattr", name)
    obj.state[name] = value


def _is_torch_module_class(module: str, name: str) -> bool:
    """``module.name`` is an ``nn.Module`` subclass in torch (looked up in already imported torch modules)."""
    mod = sys.modules.get(module)
    obj = getattr(mod, name, None) if mod is not None and name.isidentifier() else None
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module)


def _is_inert_global(module: str, name: str) -> bool:
    full = f"{module}.{name}"
    if full in INERT_GLOBALS:
        return True
    if module.startswith(_TORCH_MODULES_PREFIX):
        return _is_torch_module_class(module, name)
    parts = [*module.split("."), *name.split(".")]
    return module.split(".")[0] in INERT_NAMESPACES and all(p.isidentifier() for p in parts)


def find_inert(obj: Any) -> list[str]:
    """The global names of every :class:`InertObject` reachable from ``obj`` (sorted, without repeats).

    Walks dicts, lists, tuples, sets, module states and the recorded arguments and states of inert stubs.
    """
    found: set[str] = set()
    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, InertObject):
            found.add(item.global_name)
            stack.extend([item.call_args, item.call_kwargs, item.raw_state])
        if isinstance(item, ModuleStub):
            stack.append(item.state)
            if isinstance(item, PersistentObject):
                stack.extend([item.init_args, item.init_kwargs])
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return sorted(found)


# ------------------------------------------------------------------------------------------------------------
# Safe constructors for tensors, storages and numpy values.
# ------------------------------------------------------------------------------------------------------------


def _load_storage_from_bytes(data: Any) -> Any:
    """A storage from its legacy ``torch.save`` bytes, through torch's weights-only loader, always on CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"torch.storage._load_from_bytes got a {type(data).__name__}, expected bytes")
    if not bytes(data[:4]) == b"PK\x03\x04":
        declared = _legacy_storage_bytes(bytes(data))
        if declared > len(data):
            raise UserInputError(
                f"a tensor storage in the pickle declares {declared:,} bytes but holds only {len(data):,} (corrupt or "
                "hostile file); refused before allocating it."
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation notices
            storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # keep torch's reason (the refused global), not its advice to retry with weights_only=False
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        reason = " ".join(lines) or str(e).strip().splitlines()[0]
        raise UnsafePickleError(
            f"a tensor storage in the pickle was refused by torch's weights-only loader: {reason}"
        ) from e
    except (RuntimeError, EOFError, ValueError, AssertionError, KeyError, TypeError, IndexError, MemoryError) as e:
        # torch's legacy reader reports a damaged file with any of these (a missing storage key is an assertion)
        raise UserInputError(f"a tensor storage in the pickle is corrupt: {type(e).__name__}: {e}") from e
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(
            f"torch.storage._load_from_bytes produced a {type(storage).__name__}, not a storage"
        )
    return storage


#: storage classes a legacy ``torch.save`` stream may name, with the bytes per element
_STORAGE_ELEMENT_BYTES = {
    "UntypedStorage": 1, "ByteStorage": 1, "CharStorage": 1, "BoolStorage": 1, "QUInt8Storage": 1,
    "QInt8Storage": 1, "ShortStorage": 2, "HalfStorage": 2, "BFloat16Storage": 2, "IntStorage": 4,
    "FloatStorage": 4, "QInt32Storage": 4, "LongStorage": 8, "DoubleStorage": 8, "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


class _StorageScan(pickle.Unpickler):
    """Reads one pickle of a legacy ``torch.save`` stream, resolving only storage class names and recording what the
    persistent ids declare (``('storage', type, key, location, numel, view)``) without creating anything."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.declared = 0

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_ELEMENT_BYTES:
            return name
        raise UnsafePickleError(
            f"a tensor storage in the pickle names the global '{module}.{name}', which torch's weights-only loader "
            "refuses too; nothing was called"
        )

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            numel, kind = pid[4], pid[1]
            if not isinstance(numel, int) or numel < 0 or kind not in _STORAGE_ELEMENT_BYTES:
                raise UserInputError("a tensor storage in the pickle has a malformed record (corrupt file?)")
            self.declared += numel * _STORAGE_ELEMENT_BYTES[kind]
        return None


def _legacy_storage_bytes(data: bytes) -> int:
    """The bytes the storages of a legacy ``torch.save`` stream declare (magic, protocol, system info, then the
    object whose persistent ids name the storages), read without allocating them."""
    f = io.BytesIO(data)
    _check_declared_lengths(f)
    try:
        for _ in range(3):
            _StorageScan(f).load()
        scan = _StorageScan(f)
        scan.load()
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001  (whatever a damaged stream raises, it is a corrupt storage)
        raise UserInputError(f"a tensor storage in the pickle is corrupt: {type(e).__name__}: {e}") from None
    return scan.declared


class _BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than what is left, so scanning a pickle whose opcodes
    declare lengths beyond the end allocates nothing big."""

    def __init__(self, file: IO[bytes]) -> None:
        self._f = file
        start = file.tell()
        file.seek(0, os.SEEK_END)
        self._end = file.tell()
        file.seek(start)

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._f.tell()
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline()


def _check_declared_lengths(file: IO[bytes]) -> None:
    """Walk the opcodes of the pickle at ``file``'s position (and go back there): every length an opcode declares
    (bytes, strings, long integers, frames) must fit in the file, so the real unpickler never allocates for
    data that is not there (a pickle declaring a 1 TB string is refused here, before any allocation)."""
    if not file.seekable():
        return
    start = file.tell()
    try:
        for _ in pickletools.genops(_BoundedReader(file)):
            pass
    except ValueError as e:  # genops says which opcode wanted how much
        raise UserInputError(f"not a readable pickle ({e}); is the file complete?") from None
    finally:
        file.seek(start)


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, (tuple, list, torch.Size)) and all(isinstance(v, int) and v >= 0 for v in x)


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """A tensor viewing ``storage`` (arguments of ``torch._utils._rebuild_tensor_v2``), validated first."""
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"tensor rebuild got a {type(storage).__name__} where a storage was expected")
    if not (
        isinstance(storage_offset, int)
        and storage_offset >= 0
        and _is_int_tuple(size)
        and _is_int_tuple(stride)
    ):
        raise UnsafePickleError("tensor rebuild got a bad offset, size or stride")
    if len(size) != len(stride):
        raise UnsafePickleError(
            f"tensor rebuild: size {tuple(size)} and stride {tuple(stride)} differ in length"
        )
    if backward_hooks:
        raise UnsafePickleError("a pickled tensor carries backward hooks; refusing them")
    untyped = storage._untyped_storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation notices
        dtype = storage.dtype
    tensor = torch.empty((0,), dtype=dtype, device=untyped.device)
    try:
        tensor.set_(untyped, storage_offset, tuple(size), tuple(stride))
    except RuntimeError as e:
        raise UserInputError(f"a pickled tensor does not fit its storage (corrupt file?): {e}") from e
    tensor.requires_grad_(bool(requires_grad) and tensor.is_floating_point())
    return tensor


def _rebuild_parameter(
    data: Any, requires_grad: Any = True, backward_hooks: Any = None
) -> torch.nn.Parameter:
    """``nn.Parameter(data, requires_grad)`` (the arguments of ``torch._utils._rebuild_parameter``)."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter rebuild got a {type(data).__name__}, expected a tensor")
    if backward_hooks:
        raise UnsafePickleError("a pickled parameter carries backward hooks; refusing them")
    return torch.nn.Parameter(data.detach(), requires_grad=bool(requires_grad))


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(
            f"numpy reconstruction got a {type(dtype).__name__} where a dtype was expected"
        )
    if dtype.hasobject:
        raise UnsafePickleError("numpy arrays or scalars of object dtype are not allowed in a weights file")
    return dtype


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for plain ``ndarray`` only; the data arrives by BUILD later."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(
            f"numpy array reconstruction of {subtype!r} refused (only numpy.ndarray is allowed)"
        )
    if isinstance(dtype, (bytes, str)):
        dtype = np.dtype(dtype)
    # numpy pickles an array as an empty one (shape (0,)) filled in by BUILD; a shape with elements would allocate
    # memory the file does not hold (a pickle declaring a 1 TB array), so it is refused.
    if not _is_int_tuple(shape) or int(np.prod(shape, dtype=np.float64)) != 0:
        raise UnsafePickleError(f"numpy array reconstruction with the shape {shape!r} refused (numpy writes (0,))")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, _check_dtype(dtype))


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for non-object dtypes (``data`` are the raw bytes)."""
    _check_dtype(dtype)
    if not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar reconstruction expects raw bytes")
    return _numpy_multiarray().scalar(dtype, data)


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy.(_)core.numeric._frombuffer``: an array of the raw bytes ``buffer`` (pickle protocol 5)."""
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
        raise UnsafePickleError(f"numpy _frombuffer got a {type(buffer).__name__}, expected bytes")
    if not _is_int_tuple(shape) or order not in ("C", "F"):
        raise UnsafePickleError("numpy _frombuffer got a bad shape or memory order")
    array = np.frombuffer(bytes(buffer), dtype=_check_dtype(dtype))
    return array.reshape(tuple(shape), order=order).copy(order=order)


def _dill_create_array(f: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
    """dill's array constructor: ``f(*args)`` (numpy's ``_reconstruct`` only), then ``__setstate__``."""
    if f is not _np_reconstruct or not isinstance(args, tuple):
        raise UnsafePickleError(
            f"dill._dill._create_array called with {f!r}; only numpy's _reconstruct is allowed"
        )
    array = f(*args)
    array.__setstate__(state)
    if npdict:
        raise UnsafePickleError("dill array with an instance __dict__ refused")
    return array


def _torch_size(dims: Any = ()) -> torch.Size:
    """``torch.Size(dims)`` for a sequence of non-negative ints (``nn.Unflatten`` arguments)."""
    if not _is_int_tuple(dims):
        raise UnsafePickleError(f"torch.Size called with {type(dims).__name__}; only a sequence of ints is allowed")
    return torch.Size(dims)


def _np_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(...)`` as pickles call it (``dtype('f4', False, True)`` followed by BUILD)."""
    if not isinstance(obj, (str, bytes)):
        raise UnsafePickleError(
            f"numpy.dtype called with a {type(obj).__name__}; only type codes are allowed"
        )
    return _check_dtype(np.dtype(obj, bool(align), bool(copy)))


# The allow-list: (module, name) -> what find_class returns.
_NUMPY_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "getattr"): _inert_getattr,
    ("builtins", "setattr"): _inert_setattr,
    ("torch", "Size"): _torch_size,
    ("dnnlib.util", "EasyDict"): dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("dill._dill", "_create_array"): _dill_create_array,
    ("torch.nn.modules.sparse", "Embedding"): _EmbeddingStub,
    ("dnnlib.tflib.network", "Network"): TFNetworkStub,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_MULTIARRAY_MODULES},
    **{(m, "scalar"): _np_scalar for m in _NUMPY_MULTIARRAY_MODULES},
    **{(m, "_frombuffer"): _np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


class SafeUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves globals only from :data:`ALLOWED_GLOBALS` and inert stubs.

    Globals in :data:`INERT_NAMESPACES`, :data:`INERT_GLOBALS` and ``nn.Module`` subclasses under
    ``torch.nn.modules`` resolve to :func:`inert_class` stubs.

    ``numpy.dtype`` is special: pickles call it and then BUILD the result with ``dtype.__setstate__``; both
    are harmless. Persistent ids (``torch.save``'s own format) are refused: official snapshots do not use
    them.
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self._inert_classes: dict[str, type[InertObject]] = {}  # one stub class per global in this file

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            if _is_inert_global(module, name):
                full = f"{module}.{name}"
                if full not in self._inert_classes:
                    self._inert_classes[full] = inert_class(full)
                return self._inert_classes[full]
            raise UnsafePickleError(
                f"The pickle refers to the global '{module}.{name}', which styleforge does not allow "
                "(only tensors, numpy arrays and official network state are loaded; nothing is executed). "
                "If this is a genuine official StyleGAN2/3/XL snapshot or TensorFlow StyleGAN2 pickle, please "
                "report it."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            "The file uses pickle persistent ids (a torch.save checkpoint?), not an official training "
            "snapshot. "
            "Load torch.save files with torch.load(weights_only=True)."
        )


def safe_load(file: IO[bytes]) -> Any:
    """Unpickle from an open binary file with :class:`SafeUnpickler`.

    Raises:
        UnsafePickleError: a global outside the allow-list.
        UserInputError: the data is not a valid pickle (truncated, wrong file type).
    """
    _check_declared_lengths(file)
    try:
        return SafeUnpickler(file).load()
    except UserInputError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        RecursionError,
        OverflowError,
    ) as e:
        raise UserInputError(f"not a readable pickle ({type(e).__name__}: {e}); is the file complete?") from e


def safe_loads(data: bytes) -> Any:
    """:func:`safe_load` on bytes."""
    return safe_load(io.BytesIO(data))


def load_official_pickle(path: str | os.PathLike) -> Any:
    """Safely unpickle an official snapshot: plain values plus :class:`PersistentObject` stubs.

    Returns whatever the pickle holds, normally ``dict(G=..., D=..., G_ema=..., augment_pipe=...,
    training_set_kwargs=...)``. Nothing from the file is executed. See
    :func:`styleforge.convert.official.load_official_pickle` for turning the stubs into styleforge networks.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist or is not a file.")
    with open(path, "rb") as f:
        try:
            return safe_load(f)
        except UserInputError as e:
            raise type(e)(f"{path}: {e}") from e
