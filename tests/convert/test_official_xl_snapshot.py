"""A StyleGAN-XL training snapshot: G and G_ema load, the projected discriminator loads onto ours when its
backbones are supported (else it is skipped with the reason), nothing runs.

A real StyleGAN-XL snapshot holds a ``ProjectedDiscriminator`` built from plain ``torch.nn`` layers, timm
feature networks and the ``pg_modules`` / ``feature_networks`` packages, written by dill (bound methods and
closures by value, ``builtins.getattr``). We write such snapshots inside the test: the generators are the
official ``sgxl_stem_16`` reference networks written back in the official format, and the discriminators are
made of local classes registered under the real global names (timm is not installed here, and the reader must
never import it anyway): a small one of unsupported structure, and one with the official structure and names
(:mod:`tests.convert.fake_official_xl_d`), whose logits after loading are checked against an independent forward
computed here from the same weights. No official D output is stored in the reference folder, so equality with
the official code's own logits is not measured here.
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
from styleforge.models.projected_discriminator import ProjectedDiscriminator
from tests.conftest import reference_file
from tests.convert import fake_official, fake_official_xl_d
from tests.feature_nets.test_deit import _independent_forward, _timm_state

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
    with fake_official.registered_modules(modules):
        yield classes


def _fake_discriminator(
    classes: dict[str, type], persistent: bool, evil: Any = None, bb_name: str = BACKBONE
) -> Any:
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
        d.feature_networks = torch.nn.ModuleDict({bb_name: feat})
        d.discriminators = torch.nn.ModuleDict({bb_name: mini_discs})
        return d
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(),
        "_buffers": collections.OrderedDict(),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(
            feature_networks=torch.nn.ModuleDict({bb_name: feat}),
            discriminators=torch.nn.ModuleDict({bb_name: mini_discs}),
        ),
        "backbones": [bb_name],
        "diffaug": True,
        "interp224": False,
        "_init_args": (),
        "_init_kwargs": fake_official.easy_dict({"backbones": [bb_name], "diffaug": True}),
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
    # builtins.getattr on a stub class gives another recording stub: calling it runs nothing
    with _fake_globals() as classes:
        call = fake_official_xl_d.Call(getattr, classes["EfficientNet"], "system")
        data = pickle.dumps(_Reduce(call, f"touch {marker}"))
    stub = safe_loads(data)
    assert stub.global_name == "getattr(timm.models.efficientnet.EfficientNet, 'system')(...)"
    assert stub.call_args == (f"touch {marker}",) and not marker.exists()
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


# ------------------------------------------------------------------------------------------------------------
# The projected discriminator with the official structure and names, written with dill's machinery


@pytest.fixture(scope="module")
def official_d_file(tmp_path_factory):
    """``(snapshot path with D only, official state dict, sentinel path, the fake globals' context)``."""
    tmp = tmp_path_factory.mktemp("xl_d")
    sentinel = tmp / "executed"
    with fake_official_xl_d.official_d_globals(sentinel) as classes:
        D = fake_official_xl_d.official_d(classes, _timm_state())
        state = {k: v.detach().clone() for k, v in D.state_dict().items()}
        data = fake_official_xl_d.dumps({"G": None, "D": D, "G_ema": None, "augment_pipe": None,
                                         "training_set_kwargs": None})
    path = tmp / "network-snapshot-d.pkl"
    path.write_bytes(data)
    return path, state, sentinel, _stream_globals(data), (D, classes)


def _check_d_logits(D: Any, state: dict[str, torch.Tensor]) -> float:
    assert isinstance(D, ProjectedDiscriminator)
    assert D.config.backbones == ("deit_small_distilled", "efficientnet_lite0") and D.config.embed_classes == 1000
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    c = torch.nn.functional.one_hot(torch.tensor([3, 917]), 1000).float()
    with torch.no_grad():
        got = D.eval()(img, c, augment=False)
        want = fake_official_xl_d.independent_logits(
            state, img, c, lambda x: _independent_forward(_timm_state(), x, heads=6)[1]
        )
    err = float((got - want).abs().max())
    print(f"  projected D logits [2, {got.shape[1]}] vs the independent forward: max abs err {err:.2e} "
          f"(logits up to {float(want.abs().max()):.2f})")
    assert got.shape == (2, 128) and err <= ATOL
    return err


def test_official_projected_d_loads_onto_ours_and_nothing_runs(official_d_file):
    path, state, sentinel, names, _ = official_d_file
    expected = {
        "builtins.getattr", "builtins.setattr", "torch.Size", "dill._dill._load_type", "dill._dill._create_function",
        "dill._dill._create_cell", "dill._dill._import_module", "feature_networks.vit.__dict__",
        "feature_networks.vit.forward_flex", "feature_networks.vit.Slice", "timm.models.layers.conv2d_same.Conv2dSame",
        "timm.models.efficientnet_blocks.InvertedResidual", "timm.models.vision_transformer.VisionTransformer",
        "torch.nn.utils.spectral_norm.SpectralNorm", "torch_utils.persistence._reconstruct_persistent_obj",
        "torch.ao.nn.quantized.modules.functional_modules.FloatFunctional", "pg_modules.blocks.DownBlock",
    }
    assert expected <= names, expected - names
    # read while the fake timm / pg_modules / dill modules are registered: any of them that ran would write sentinel
    with fake_official_xl_d.official_d_globals(sentinel):
        snap = official.load_official_pickle(path)
    assert not sentinel.exists(), "a global of the pickle was resolved to the real thing and ran"
    assert snap["skipped"] == {} and snap["G"] is None
    D = snap["D"]
    _check_d_logits(D, state)
    # the converted D is ours: frozen backbones, trainable heads, the official DiffAugment on by default
    assert D.config.diffaugment == "color,translation,cutout" and D.config.interp224 is True
    assert not any(p.requires_grad for p in D.features.parameters())
    raw = official.load_official_pickle(path, convert=False)["D"]
    vit = raw.get_submodule("feature_networks.deit_small_distilled_patch16_224.pretrained.model")
    assert isinstance(vit.state["forward_flex"], InertObject)  # the bound method: a recording stub, never built


def test_unconditional_lite0_only_projected_d(tmp_path):
    """The Projected GAN setting: EfficientNet-lite0 alone, unconditional heads (SingleDisc)."""
    sentinel = tmp_path / "executed"
    with fake_official_xl_d.official_d_globals(sentinel) as classes:
        D = fake_official_xl_d.official_d(classes, None, seed=1, conditional=False)
        state = {k: v.detach().clone() for k, v in D.state_dict().items()}
        data = fake_official_xl_d.dumps({"G": None, "D": D, "G_ema": None})
        path = tmp_path / "d.pkl"
        path.write_bytes(data)
        loaded = official.load_official_pickle(path)["D"]
    assert not sentinel.exists()
    assert loaded.config.backbones == ("efficientnet_lite0",) and loaded.config.c_dim == 0
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = loaded(img, torch.zeros(2, 0), augment=False)
        want = fake_official_xl_d.independent_logits(state, img, torch.zeros(2, 0))
    assert got.shape == (2, 64) and float((got - want).abs().max()) <= ATOL


def test_unsupported_backbone_is_skipped_with_its_reason(tmp_path):
    with fake_official.official_globals(), _fake_globals() as classes:
        data = fake_official.dumps(
            {"G": None, "D": _fake_discriminator(classes, False, bb_name="tf_efficientnet_lite3"), "G_ema": None}
        )
    path = tmp_path / "lite3.pkl"
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="tf_efficientnet_lite3"), pytest.raises(
        official.UnknownNetworkError, match="not among the supported"
    ):
        official.load_official_pickle(path)


@pytest.mark.reference
def test_full_xl_snapshot_loads_g_g_ema_and_d(tmp_path, official_d_file):
    """G, D and G_ema of one official-format snapshot, the D with the official structure."""
    _, state, sentinel, _, (D_official, classes) = official_d_file
    raw, ref = _reference()
    with fake_official_xl_d.official_d_globals(sentinel, again=classes):
        data = fake_official_xl_d.dumps({
            "G": _official_form(raw["G"]), "D": D_official, "G_ema": _official_form(raw["G_ema"]),
            "augment_pipe": None,
            "training_set_kwargs": fake_official.easy_dict({"path": "imagenet16.zip", "use_labels": True}),
        })
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(data)
    del data
    loaded = styleforge.load(path)
    assert loaded.skipped == {} and not sentinel.exists()
    _check_image(loaded.G_ema, ref, "img_psi1_const")
    _check_image(loaded.G, ref, "img_psi1_const_from_G_not_ema")
    # the D is the one whose logits the test above checks: compare a few of its tensors with the official ones
    ours = loaded.D.state_dict()
    pairs = {
        "features.deit_small_distilled.backbone.blocks.11.mlp.fc2.weight":
            "feature_networks.deit_small_distilled_patch16_224.pretrained.model.blocks.11.mlp.fc2.weight",
        "features.efficientnet_lite0.backbone.blocks.15.project.bn.running_var":
            "feature_networks.tf_efficientnet_lite0.pretrained.layer3.1.0.bn3.running_var",
        "heads.efficientnet_lite0.0.blocks.3.conv.weight_u":
            "discriminators.tf_efficientnet_lite0.mini_discs.0.main.3.main.0.weight_u",
        "heads.deit_small_distilled.3.embed_proj.weight":
            "discriminators.deit_small_distilled_patch16_224.mini_discs.3.embed_proj.weight",
    }
    for mine, theirs in pairs.items():
        assert torch.equal(ours[mine], state[theirs]), mine
