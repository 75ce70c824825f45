"""A StyleGAN-XL training snapshot: G and G_ema load, the projected discriminator is skipped, nothing runs.

A real StyleGAN-XL snapshot holds a ``ProjectedDiscriminator`` built from plain ``torch.nn`` layers, timm
feature networks and the ``pg_modules`` / ``feature_networks`` packages. We write such a snapshot inside the
test: the generators are the official ``sgxl_stem_16`` reference networks written back in the official format,
and the discriminator is made of local classes registered under the real global names for the time of
pickling only (timm is not installed here, and the reader must never import it anyway).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import pickle
import pickletools
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import styleforge
from styleforge.convert import official
from styleforge.convert.safe_pickle import (
    InertObject,
    ModuleStub,
    PersistentObject,
    UnsafePickleError,
    find_inert,
    safe_loads,
)
from tests.conftest import reference_file
from tests.convert import fake_official

ATOL = 1e-4
ENTRY = "sgxl_stem_16"
#: the feature network of StyleGAN-XL's default projected discriminator
BACKBONE = "tf_efficientnet_lite0"
#: globals the fake discriminator must name in the pickle stream
FAKE_GLOBALS = {
    "timm.models.efficientnet": "EfficientNet",
    "timm.layers.activations": "Swish",
    "pg_modules.projector": "F_RandomProj",
    "pg_modules.discriminator": "ProjectedDiscriminator",
}


class _Reduce:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


@contextlib.contextmanager
def _fake_globals() -> Iterator[dict[str, type]]:
    """Register throw-away modules so that pickle can name ``FAKE_GLOBALS``; yields ``{name: class}``."""
    classes: dict[str, type] = {}
    modules: dict[str, types.ModuleType] = {}
    for module, name in FAKE_GLOBALS.items():
        cls = type(name, (torch.nn.Module,), {})
        cls.__module__, cls.__qualname__ = module, name
        classes[name] = cls
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(modules[module], name, cls)
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        yield classes
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _fake_discriminator(classes: dict[str, type], persistent: bool, evil: Any = None) -> Any:
    """A small projected discriminator: timm EfficientNet stem + spectral-normed multi-scale heads."""
    torch.manual_seed(1)
    backbone = classes["EfficientNet"]()
    backbone.conv_stem = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    backbone.bn1 = torch.nn.BatchNorm2d(4)
    backbone.act1 = classes["Swish"]()
    backbone.act_layer = functools.partial(classes["Swish"])
    if evil is not None:
        backbone.payload = evil
    feat = classes["F_RandomProj"]()
    feat.pretrained = backbone
    feat.normstats = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    head = torch.nn.Sequential(
        torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 8, 4, stride=2, padding=1, bias=False)),
        torch.nn.LeakyReLU(0.2, inplace=True),
    )
    mini_discs = torch.nn.ModuleDict({"0": head})
    if not persistent:
        d = classes["ProjectedDiscriminator"]()
        d.feature_networks = torch.nn.ModuleDict({BACKBONE: feat})
        d.discriminators = torch.nn.ModuleDict({BACKBONE: mini_discs})
        return d
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(),
        "_buffers": collections.OrderedDict(),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(
            feature_networks=torch.nn.ModuleDict({BACKBONE: feat}),
            discriminators=torch.nn.ModuleDict({BACKBONE: mini_discs}),
        ),
        "backbones": [BACKBONE],
        "diffaug": True,
        "interp224": False,
        "_init_args": (),
        "_init_kwargs": fake_official.easy_dict({"backbones": [BACKBONE], "diffaug": True}),
    }
    return fake_official.Persistent("ProjectedDiscriminator", state)


def _official_form(obj: Any) -> Any:
    """Turn the stubs of the reference snapshot back into objects that pickle in the official format."""
    if isinstance(obj, PersistentObject):
        state = {k: _official_form(v) for k, v in obj.state.items()}
        state["_init_args"] = obj.init_args
        state["_init_kwargs"] = fake_official.easy_dict(obj.init_kwargs)
        return fake_official.Persistent(obj.class_name, state)
    if isinstance(obj, ModuleStub):  # the plain torch.nn.Embedding of the XL mapping network
        assert obj.class_name == "torch.nn.Embedding"
        module = torch.nn.Embedding.__new__(torch.nn.Embedding)
        module.__dict__.update({k: _official_form(v) for k, v in obj.state.items()})
        return module
    if isinstance(obj, dict):
        return type(obj)((k, _official_form(v)) for k, v in obj.items())
    return obj


_CACHE: dict[str, Any] = {}


def _reference() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not _CACHE:
        raw = safe_loads(reference_file(f"{ENTRY}_stripped.pkl").read_bytes())
        npz = np.load(reference_file(f"{ENTRY}.npz"))
        _CACHE["raw"], _CACHE["ref"] = raw, {k: npz[k] for k in npz.files}
    return _CACHE["raw"], _CACHE["ref"]


def _xl_snapshot(persistent_d: bool = True, evil: Any = None) -> bytes:
    raw, _ = _reference()
    with fake_official.official_globals(), _fake_globals() as classes:
        snap = {
            "G": _official_form(raw["G"]),
            "D": _fake_discriminator(classes, persistent_d, evil),
            "G_ema": _official_form(raw["G_ema"]),
            "augment_pipe": None,
            "training_set_kwargs": fake_official.easy_dict({"path": "imagenet16.zip", "use_labels": True}),
        }
        return fake_official.dumps(snap)


def _stream_globals(data: bytes) -> set[str]:
    """``module.name`` of every global the pickle stream names (GLOBAL, or two strings + STACK_GLOBAL)."""
    found: set[str] = set()
    pushed: list[Any] = []  # values pushed by string and memo-get opcodes, in order
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.name == "STACK_GLOBAL":
            found.add(f"{pushed[-2]}.{pushed[-1]}")
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        if op.name not in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINGET", "LONG_BINGET", "MEMOIZE"):
            pushed.append(None)
    return found


def _check_image(G: Any, ref: dict[str, np.ndarray], key: str) -> float:
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        img = G(z, c, truncation_psi=1.0, noise_mode="const")
    err = float(np.abs(img.numpy().astype(np.float64) - ref[key].astype(np.float64)).max())
    print(f"  {ENTRY} {key}: max abs err {err:.3e}")
    assert err <= ATOL, f"{key}: max abs err {err:.3e} > {ATOL}"
    return err


@pytest.mark.reference
def test_stream_names_the_real_xl_discriminator_globals():
    names = _stream_globals(_xl_snapshot())
    expected = {f"{m}.{n}" for m, n in FAKE_GLOBALS.items() if n != "ProjectedDiscriminator"} | {
        "torch.nn.modules.conv.Conv2d",
        "torch.nn.modules.container.ModuleDict",
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.batchnorm.BatchNorm2d",
        "torch.nn.utils.spectral_norm.SpectralNorm",
        "functools.partial",
        "torch.nn.modules.sparse.Embedding",
        "torch_utils.persistence._reconstruct_persistent_obj",
    }
    assert expected <= names, expected - names
    # the reader resolves them to stubs without importing the fake modules (they are gone by now)
    assert "timm" not in sys.modules and "pg_modules" not in sys.modules
    D = safe_loads(_xl_snapshot())["D"]
    assert isinstance(D, PersistentObject) and D.class_name == "ProjectedDiscriminator"
    backbone = D.get_submodule(f"feature_networks.{BACKBONE}.pretrained")
    assert isinstance(backbone, InertObject) and backbone.global_name == "timm.models.efficientnet.EfficientNet"
    partial = backbone.state["act_layer"]
    assert partial.global_name == "functools.partial"
    assert partial.call_args[0].__name__ == "InertObject"  # the stubbed Swish class, never the real one
    head_conv = D.get_submodule(f"discriminators.{BACKBONE}.0.0")
    assert head_conv.class_name == "torch.nn.modules.conv.Conv2d"
    assert tuple(head_conv.state_dict()["weight_orig"].shape) == (8, 4, 4, 4)
    assert {"timm.models.efficientnet.EfficientNet", "torch.nn.utils.spectral_norm.SpectralNorm"} <= set(
        find_inert(D)
    )


@pytest.mark.reference
@pytest.mark.parametrize("persistent_d", [True, False], ids=["persistent_D", "plain_module_D"])
def test_generators_load_and_projected_discriminator_is_skipped(tmp_path, persistent_d):
    _, ref = _reference()
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(_xl_snapshot(persistent_d=persistent_d))
    with pytest.warns(UserWarning, match="projected discriminator"):
        loaded = styleforge.load(path)
    assert loaded.D is None and set(loaded.skipped) == {"D"}
    reason = loaded.skipped["D"]
    assert "ProjectedDiscriminator" in reason and "not support" in reason
    assert "timm.models.efficientnet.EfficientNet" in reason
    assert loaded.config["skipped"] == loaded.skipped
    assert loaded.training_set_kwargs == {"path": "imagenet16.zip", "use_labels": True}
    _check_image(loaded.G_ema, ref, "img_psi1_const")
    _check_image(loaded.G, ref, "img_psi1_const_from_G_not_ema")


@pytest.mark.reference
def test_stylegan2_snapshot_has_nothing_skipped():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no skip warning
        snap = official.load_official_pickle(reference_file("sg2_skip_stripped.pkl"))
    assert snap["skipped"] == {} and snap["D"] is not None


@pytest.mark.reference
def test_evil_global_inside_the_discriminator_is_still_refused(tmp_path):
    marker = tmp_path / "executed"
    data = _xl_snapshot(evil=_Reduce(os.system, f"touch {marker}"))
    assert b"system" in data
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=f"{os.system.__module__}.system"):
        styleforge.load(path)
    assert not marker.exists()


def test_inert_stubs_record_and_never_call(tmp_path):
    marker = tmp_path / "executed"
    # a stubbed timm "class" called with an evil payload: the payload's global is still refused
    with _fake_globals() as classes:
        cls = classes["EfficientNet"]
        data = pickle.dumps(_Reduce(cls, _Reduce(os.system, f"touch {marker}")))
        ok = pickle.dumps(_Reduce(functools.partial(cls, 3), 4))
    with pytest.raises(UnsafePickleError, match=f"{os.system.__module__}.system"):
        safe_loads(data)
    assert not marker.exists()
    stub = safe_loads(ok)
    assert stub.global_name == "functools.partial(...)" and stub.call_args == (4,)
    # torch.nn.modules names that are not nn.Module classes stay refused
    for global_name in (
        b"torch.nn.modules.module\nregister_module_forward_hook",
        b"torch.nn.modules.conv\nF",
        b"torch.nn.modules.conv\nConv2d.__init__",
        b"timm.models\nos.system bad",
    ):
        with pytest.raises(UnsafePickleError):
            safe_loads(b"c" + global_name + b"\n.")
    assert isinstance(safe_loads(pickle.dumps(torch.nn.Identity())), InertObject)


def test_all_networks_unsupported_is_a_clear_error(tmp_path):
    with fake_official.official_globals(), _fake_globals() as classes:
        data = fake_official.dumps({"G": None, "D": _fake_discriminator(classes, True), "G_ema": None})
    path = tmp_path / "d_only.pkl"
    path.write_bytes(data)
    with pytest.warns(UserWarning), pytest.raises(official.UnknownNetworkError, match="no network"):
        official.load_official_pickle(path)
    raw = official.load_official_pickle(path, convert=False)  # raw stubs stay available
    assert raw["D"].class_name == "ProjectedDiscriminator" and raw["skipped"] == {}
