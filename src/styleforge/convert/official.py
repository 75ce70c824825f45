"""Turn NVIDIA's official snapshots into styleforge networks.

:func:`load_official_pickle` reads a snapshot safely (see :mod:`styleforge.convert.safe_pickle`) and converts
every network in it. :func:`convert_network` picks the converter for one pickled network by asking each family
module's ``CONVERTERS`` list (``[(can_convert(obj) -> bool, convert(obj) -> Network), ...]``) in turn.

Converters recognise a family from the stored *state and constructor arguments*, never from the class name
alone: ``Generator``, ``MappingNetwork`` and ``SynthesisNetwork`` exist in StyleGAN2, StyleGAN3 and
StyleGAN-XL with different structure.

Weights are moved by :func:`remap_state_dict`, a table-driven remapping: each :class:`KeyRule` matches
official keys with a regular expression and names the styleforge key (and an optional transform). Every
official key must be claimed by a rule, every styleforge key must be filled, and every shape must match;
otherwise a :class:`ConversionError` lists all problems at once. The result is loaded with
``load_state_dict(strict=True)``.

The TensorFlow releases of StyleGAN2 / StyleGAN2-ADA pickle a tuple ``(G, D, Gs)`` of
``dnnlib.tflib.network.Network`` objects instead; :func:`load_official_pickle` reads it the same way (``Gs`` is
``G_ema``) and :mod:`styleforge.convert.tensorflow_stylegan2` converts the networks.

PGGAN: styleforge trains and saves its own PGGAN networks, but does not read the official PGGAN release's
TensorFlow pickles (``G_paper`` / ``D_paper`` networks of the ``tfutil`` module); they are refused by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from styleforge.convert.safe_pickle import InertObject, ModuleStub, PersistentObject, TFNetworkStub, find_inert
from styleforge.convert.safe_pickle import load_official_pickle as _unpickle
from styleforge.models.base import Network
from styleforge.utils.errors import UserInputError

__all__ = [
    "ConversionError",
    "UnknownNetworkError",
    "NotASnapshotError",
    "KeyRule",
    "Converter",
    "CONVERTER_MODULES",
    "converters",
    "convert_network",
    "remap_state_dict",
    "load_official_pickle",
    "SNAPSHOT_NETWORK_KEYS",
    "unsupported_reason",
]

#: (can_convert, convert) pair of a family module's ``CONVERTERS`` list
Converter = tuple[Callable[[Any], bool], Callable[[Any], Network]]

#: family modules asked in this order; every one must import (a missing module is an error, never skipped)
CONVERTER_MODULES = (
    "styleforge.convert.official_stylegan2",
    "styleforge.convert.official_stylegan3",
    "styleforge.convert.official_stylegan_xl",
    "styleforge.convert.tensorflow_stylegan2",
)
#: what the converters read, for error messages
SUPPORTED_TEXT = (
    "StyleGAN2(-ADA) G/D, StyleGAN3 G and StyleGAN-XL G and projected D (EfficientNet-lite0 / DeiT backbones) "
    "training snapshots as written by the official PyTorch "
    "code, and the (G, D, Gs) pickles of the TensorFlow StyleGAN2 / StyleGAN2-ADA releases"
)

#: the network entries of an official training snapshot
SNAPSHOT_NETWORK_KEYS = ("G", "D", "G_ema")
#: the TensorFlow releases pickle ``(G, D, Gs)``: our names in that order
TF_PICKLE_ORDER = ("G", "D", "G_ema")

#: how many problems of one kind a conversion error lists before summarising
_MAX_LISTED = 12
#: class name of StyleGAN-XL's (and Projected GAN's) discriminator
_PROJECTED_D_NAME = "ProjectedDiscriminator"


class ConversionError(UserInputError):
    """An official network's weights do not fit the network built from its constructor arguments."""


class UnknownNetworkError(UserInputError):
    """No converter recognises the structure of a pickled network."""


class NotASnapshotError(UserInputError):
    """A safely readable pickle that is not a GAN training snapshot."""


# ------------------------------------------------------------------------------------------------------------
# Table-driven state-dict remapping.
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRule:
    """One row of a conversion table.

    Attributes:
        pattern: regular expression that must match the *whole* official key
            (``r"synthesis\\.b(\\d+)\\.const"``).
        target: the styleforge key, with ``\\1``-style references to the pattern's groups; ignored when
            ``action == "drop"``.
        action: ``"load"`` (copy into the target), ``"check"`` (the target is a buffer our network derives
            from its config, e.g. a resampling filter: the official value must equal ours, and nothing is
            copied) or ``"drop"`` (the official tensor has no counterpart and is deliberately ignored; say why
            in ``note``).
        transform: applied to the official tensor before loading or checking (e.g. a reshape).
        note: why the rule exists (shown in error messages and useful for readers of the table).
    """

    pattern: str
    target: str = ""
    action: str = "load"
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("load", "check", "drop"):
            raise ValueError(f"KeyRule action must be 'load', 'check' or 'drop', got {self.action!r}")


def _format_problems(title: str, items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED])
    more = f" (and {len(items) - len(shown)} more)" if len(items) > len(shown) else ""
    return f"{title}: {', '.join(shown)}{more}"


def remap_state_dict(
    official: dict[str, torch.Tensor],
    rules: Sequence[KeyRule],
    model: torch.nn.Module,
    what: str = "network",
    check_atol: float = 1e-6,
) -> dict[str, torch.Tensor]:
    """Map official tensors onto ``model``'s state dict with ``rules`` and load them strictly.

    Args:
        official: flat official state dict (``PersistentObject.state_dict()``).
        rules: the conversion table; the first rule whose pattern matches a key is used.
        model: the freshly built styleforge network; loaded in place with ``strict=True``.
        what: name used in error messages (``"StyleGAN2 generator"``).
        check_atol: tolerance of ``"check"`` rules.

    Returns:
        The state dict that was loaded (styleforge keys).

    Raises:
        ConversionError: unclaimed official keys, unfilled styleforge keys, keys filled twice, shape
            mismatches or a ``"check"`` buffer that differs; all problems are listed together.
    """
    compiled = [(re.compile(r.pattern), r) for r in rules]
    own_state = model.state_dict()
    own_tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    out: dict[str, torch.Tensor] = {}
    unclaimed: list[str] = []
    duplicate: list[str] = []
    mismatched: list[str] = []
    for key, value in official.items():
        for regex, candidate in compiled:
            m = regex.fullmatch(key)
            if m is not None:
                rule = candidate
                break
        else:
            unclaimed.append(key)
            continue
        if rule.action == "drop":
            continue
        target = m.expand(rule.target)
        tensor = rule.transform(value) if rule.transform is not None else value
        if rule.action == "check":
            ours = own_tensors.get(target)
            if ours is None:
                mismatched.append(f"{key} -> {target} (no such buffer in ours)")
            elif tuple(ours.shape) != tuple(tensor.shape):
                mismatched.append(
                    f"{key} -> {target} (shape {tuple(tensor.shape)} vs ours {tuple(ours.shape)})"
                )
            elif not torch.allclose(ours.detach().float().cpu(), tensor.float(), atol=check_atol, rtol=0):
                mismatched.append(f"{key} -> {target} (value differs from the one derived from the config)")
            continue
        if target in out:
            duplicate.append(f"{key} -> {target}")
            continue
        if target not in own_state:
            mismatched.append(f"{key} -> {target} (no such key in ours)")
            continue
        if tuple(own_state[target].shape) != tuple(tensor.shape):
            mismatched.append(
                f"{key} -> {target} (shape {tuple(tensor.shape)} vs ours {tuple(own_state[target].shape)})"
            )
            continue
        out[target] = tensor.to(own_state[target].dtype)
    missing = [k for k in own_state if k not in out]
    problems = []
    if unclaimed:
        problems.append(_format_problems("official keys no rule claims", unclaimed))
    if missing:
        problems.append(_format_problems("styleforge keys left unfilled", missing))
    if duplicate:
        problems.append(_format_problems("keys filled twice", duplicate))
    if mismatched:
        problems.append(_format_problems("mismatches", mismatched))
    if problems:
        raise ConversionError(
            f"Cannot convert the official {what}: "
            + "; ".join(problems)
            + ". The pickle's structure differs from "
            "what its constructor arguments describe; it may come from a modified fork of the official code."
        )
    model.load_state_dict(out, strict=True)
    return out


# ------------------------------------------------------------------------------------------------------------
# Dispatch.
# ------------------------------------------------------------------------------------------------------------


def converters(stub_type: type = ModuleStub) -> list[Converter]:
    """All ``(can_convert, convert)`` pairs of the family modules in registry order.

    Args:
        stub_type: the kind of pickled network to convert: :class:`ModuleStub` (PyTorch snapshots) or
            :class:`TFNetworkStub`; a family module declares which it reads in ``STUB_TYPE`` (default
            :class:`ModuleStub`).

    Raises:
        ImportError: a module of :data:`CONVERTER_MODULES` is missing or fails to import, or has no
            ``CONVERTERS`` list (a broken installation must not look like an unsupported pickle).
    """
    found: list[Converter] = []
    for name in CONVERTER_MODULES:
        module = importlib.import_module(name)
        if not isinstance(getattr(module, "CONVERTERS", None), list):
            raise ImportError(f"converter module {name} has no CONVERTERS list")
        if getattr(module, "STUB_TYPE", ModuleStub) is stub_type:
            found.extend(module.CONVERTERS)
    return found


def _describe_stub(obj: Any) -> str:
    if isinstance(obj, TFNetworkStub):
        keys = list(obj.collect_variables())
        return (
            f"TensorFlow network {obj.name!r} built by {obj.build_func_name!r}, arguments {obj.static_kwargs}, "
            f"{len(keys)} variables (first: {keys[:4]})"
        )
    kwargs = obj.init_kwargs if isinstance(obj, PersistentObject) else {}
    keys = list(obj.state_dict())
    return (
        f"class {obj.class_name!r}, constructor arguments {kwargs}, {len(keys)} tensors (first: {keys[:4]})"
    )


def convert_network(obj: ModuleStub | TFNetworkStub) -> Network:
    """A styleforge network equal to the official network ``obj`` (a stub from the safe unpickler: a PyTorch
    module stub or a TensorFlow network).

    Raises:
        UnknownNetworkError: no converter recognises ``obj``'s structure.
        ConversionError: a converter recognised it but the weights do not fit.
    """
    if not isinstance(obj, (ModuleStub, TFNetworkStub)):
        raise UnknownNetworkError(f"Expected a pickled network, got a {type(obj).__name__}.")
    for can_convert, convert in converters(TFNetworkStub if isinstance(obj, TFNetworkStub) else ModuleStub):
        if can_convert(obj):
            net = convert(obj)
            net.eval()
            return net
    raise UnknownNetworkError(
        f"No converter recognises this official network ({_describe_stub(obj)}). Supported: {SUPPORTED_TEXT}."
    )


def unsupported_reason(key: str, obj: ModuleStub | TFNetworkStub) -> str | None:
    """Why the pickled network ``obj`` (stored under ``key``) cannot be converted, or ``None`` if it may be.

    A network is unsupported when it holds :class:`~styleforge.convert.safe_pickle.InertObject` stubs:
    classes (timm feature networks, ``pg_modules``, plain ``torch.nn`` layers, ...) that were recorded but
    never built, because styleforge has no counterpart for them. StyleGAN-XL's projected discriminator is the
    case met in practice.
    """
    inert = find_inert(obj)
    if not inert:
        return None
    name = obj.global_name if isinstance(obj, InertObject) else obj.class_name
    if name.rsplit(".", 1)[-1] == _PROJECTED_D_NAME:
        what = (
            f"{key} is StyleGAN-XL's projected discriminator ({_PROJECTED_D_NAME}, with pretrained feature "
            "networks), which styleforge does not support"
        )
    else:
        what = f"{key} ({name}) is built from classes styleforge does not support"
    held = _format_problems("classes it holds", inert)
    return f"{what}; it was read without running anything and left out ({held})."


def _is_projected_d(obj: Any) -> bool:
    from styleforge.convert.official_projected_d import is_projected_d

    return is_projected_d(obj)


def _convert_projected_d(key: str, obj: ModuleStub) -> tuple[Network | None, str | None]:
    """StyleGAN-XL's projected D onto ours when its backbones are supported, else ``(None, reason)``."""
    from styleforge.convert.official_projected_d import convert_projected_d_or_reason

    return convert_projected_d_or_reason(key, obj)


def _read_augment_pipe(obj: Any) -> dict[str, Any] | None:
    """``{"p": float | None, "init_kwargs": dict}`` of a pickled augment pipe; never raises."""
    if obj is None:
        return None
    info: dict[str, Any] = {
        "class_name": getattr(obj, "class_name", type(obj).__name__),
        "p": None,
        "init_kwargs": {},
    }
    try:
        if isinstance(obj, PersistentObject):
            info["init_kwargs"] = dict(obj.init_kwargs)
        if isinstance(obj, ModuleStub):
            p = obj.state_dict().get("p")
            if p is not None and p.numel() == 1:
                info["p"] = float(p.reshape(()))
    except Exception:  # noqa: BLE001  (a strange augment pipe must not stop the networks from loading)
        pass
    return info


def _plain(value: Any) -> Any:
    """JSON-friendly copy of small pickled values (dicts, lists, numpy scalars); anything else -> its repr."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:
        return value.item()
    return repr(value)


def load_official_pickle(path: Any, convert: bool = True) -> dict[str, Any]:
    """Read an official training snapshot and convert its networks.

    Args:
        path: an official ``.pkl`` (StyleGAN2-ADA, StyleGAN3 or StyleGAN-XL training snapshot, or a TensorFlow
            StyleGAN2 / StyleGAN2-ADA pickle ``(G, D, Gs)``).
        convert: ``False`` returns the raw stubs under ``G``/``D``/``G_ema`` instead of styleforge networks.

    Returns:
        ``{"G": Network | None, "D": ..., "G_ema": ..., "augment_pipe": {"p", "init_kwargs", "class_name"} |
        None, "training_set_kwargs": dict | None, "skipped": {name: reason}}``. StyleGAN-XL's projected
        discriminator converts to :class:`~styleforge.models.projected_discriminator.ProjectedDiscriminator`
        when its feature networks are supported (:mod:`styleforge.convert.official_projected_d`). A network that
        holds classes styleforge does not implement (other backbones) is ``None``, its reason is in ``skipped``
        and a ``UserWarning`` says so; the other networks convert as usual.

    Raises:
        UnsafePickleError: the pickle refers to a global outside the allow-list.
        NotASnapshotError: the pickle holds no network.
        UnknownNetworkError: no network in the snapshot can be converted.
    """
    data = _unpickle(path)
    if isinstance(data, tuple) and len(data) == len(TF_PICKLE_ORDER) and all(
        isinstance(net, TFNetworkStub) for net in data
    ):
        data = dict(zip(TF_PICKLE_ORDER, data, strict=True))  # (G, D, Gs); Gs is the moving average
    if not isinstance(data, dict) or not any(
        isinstance(data.get(k), (ModuleStub, TFNetworkStub)) for k in SNAPSHOT_NETWORK_KEYS
    ):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise NotASnapshotError(
            f"{path} is a pickle but not a GAN training snapshot: expected a dict with networks under "
            "'G', 'D' or "
            f"'G_ema', found {found}."
        )
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for key in SNAPSHOT_NETWORK_KEYS:
        obj = data.get(key)
        if obj is None:
            out[key] = None
        elif not isinstance(obj, (ModuleStub, TFNetworkStub)):
            raise NotASnapshotError(f"{path}: entry {key!r} is a {type(obj).__name__}, not a network.")
        elif convert and _is_projected_d(obj):
            out[key], reason = _convert_projected_d(key, obj)
            if reason is not None:
                skipped[key] = reason
                warnings.warn(f"{path}: {reason}", stacklevel=2)
        elif convert and (reason := unsupported_reason(key, obj)) is not None:
            out[key] = None
            skipped[key] = reason
            warnings.warn(f"{path}: {reason}", stacklevel=2)
        else:
            out[key] = convert_network(obj) if convert else obj
    if convert and all(out[k] is None for k in SNAPSHOT_NETWORK_KEYS):
        raise UnknownNetworkError(
            f"{path}: no network in the snapshot can be converted: {' '.join(skipped.values())}"
        )
    out["skipped"] = skipped
    out["augment_pipe"] = _read_augment_pipe(data.get("augment_pipe"))
    tsk = data.get("training_set_kwargs")
    out["training_set_kwargs"] = _plain(tsk) if isinstance(tsk, dict) else None
    return out
