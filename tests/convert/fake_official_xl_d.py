"""A StyleGAN-XL projected discriminator with the official structure and names, pickled as the official training
loop (dill) writes it, built inside the tests from local classes.

timm, ``pg_modules``, ``feature_networks`` and dill are not installed here (and the reader must never import
them): :func:`official_d_globals` registers throw-away modules under the real names while pickling. Their classes
and functions leave a sentinel file when they are constructed, unpickled or called, so a test that keeps them
registered while *reading* proves the reader never resolved them.

What the stream holds, as in a real snapshot (notes D):

- ``pg_modules.discriminator.ProjectedDiscriminator`` / ``MultiScaleD`` / ``SingleDiscCond``,
  ``pg_modules.projector.F_RandomProj``, ``pg_modules.blocks.DownBlock`` / ``FeatureFusionBlock``;
- timm's ``efficientnet_blocks.DepthwiseSeparableConv`` / ``InvertedResidual``, ``layers.conv2d_same.Conv2dSame``,
  ``vision_transformer.VisionTransformer`` / ``Block`` / ``Attention``, ``layers.patch_embed.PatchEmbed``,
  ``layers.mlp.Mlp``; ``feature_networks.vit.Slice`` / ``Transpose``;
- torch's modules, spectral-norm hooks (``weight_orig``, ``weight_u``, ``weight_v``), ``torch.Size``,
  ``FloatFunctional``; ``FullyConnectedLayer`` through the persistence reconstructor;
- dill's machinery: ``types.MethodType`` through ``dill._dill._load_type`` for the patched ``forward_flex`` and
  ``_resize_pos_embed`` bound methods, the forward hooks written by value with ``_create_function``,
  ``_create_code`` (reached through ``builtins.getattr`` on ``dill._dill._import_module('dill._dill')``),
  ``_create_cell`` and the globals ``feature_networks.vit.__dict__``, and a ``builtins.setattr``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.convert import fake_official

LITE0 = "tf_efficientnet_lite0"
DEIT_S = "deit_small_distilled_patch16_224"
# lite0 stages: (repeats, kernel, stride, expand, out), written here independently of styleforge
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
HEAD_TABLE = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64}

_CLASSES = {
    "pg_modules.discriminator": ("ProjectedDiscriminator", "MultiScaleD", "SingleDiscCond", "SingleDisc"),
    "pg_modules.projector": ("F_RandomProj",),
    "pg_modules.blocks": ("DownBlock", "FeatureFusionBlock"),
    "timm.models.efficientnet_blocks": ("DepthwiseSeparableConv", "InvertedResidual"),
    "timm.models.vision_transformer": ("VisionTransformer", "Block", "Attention"),
    "timm.models.layers.patch_embed": ("PatchEmbed",),
    "timm.models.layers.mlp": ("Mlp",),
    "feature_networks.vit": ("Slice", "Transpose"),
    "training.networks_stylegan2": ("FullyConnectedLayer",),
}
_FUNCTIONS = {
    "feature_networks.vit": ("forward_flex", "_resize_pos_embed"),
    "dill._dill": ("_load_type", "_create_function", "_create_cell", "_import_module", "_create_code"),
}


class _FakeModule:
    """A ``sys.modules`` entry whose attributes are given (including ``__dict__``, which a real module cannot
    fake: dill writes a function's globals as the global ``<module>.__dict__``)."""

    def __init__(self, name: str, attrs: dict[str, Any]) -> None:
        object.__setattr__(self, "_attrs", {"__name__": name, **attrs})

    def __getattribute__(self, name: str) -> Any:
        attrs = object.__getattribute__(self, "_attrs")
        if name in attrs:
            return attrs[name]
        raise AttributeError(name)


class _ByName:
    """Pickles as the global ``module.name`` (resolved in :class:`_FakeModule`)."""

    def __init__(self, module: str, name: str) -> None:
        self.__module__ = module
        self.name = name

    def __reduce__(self) -> str:
        return self.name


class Call:
    """A callable that pickles as ``fn(*args)``, so that it can itself be the callable of another reduce."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __call__(self, *args: Any) -> Any:
        raise AssertionError("never called")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


@contextlib.contextmanager
def official_d_globals(sentinel: Path, again: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Register the fake timm / pg_modules / feature_networks / dill modules (and the persistence / dnnlib ones);
    yields ``{name: class or function}``. Anything of theirs that runs writes ``sentinel``. ``again``: what an
    earlier call yielded, to register the same objects once more (to pickle networks built under it)."""
    if again is not None:
        with _registered(again["__modules__"]):
            yield again
        return

    def touch(*_: Any, **__: Any) -> None:
        sentinel.write_text("executed")

    found: dict[str, Any] = {}
    attrs: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    for module, names in _CLASSES.items():
        for name in names:
            base = nn.Module

            def setstate(self: Any, state: Any, _touch: Any = touch) -> None:
                _touch()
                nn.Module.__setstate__(self, state)

            cls = type(name, (base,), {"__setstate__": setstate})
            cls.__module__, cls.__qualname__ = module, name
            attrs[module][name] = found[name] = cls
    def conv_setstate(self: Any, state: Any) -> None:
        touch()
        nn.Conv2d.__setstate__(self, state)

    conv_same = type("Conv2dSame", (nn.Conv2d,), {"__setstate__": conv_setstate})
    conv_same.__module__ = "timm.models.layers.conv2d_same"
    attrs["timm.models.layers.conv2d_same"]["Conv2dSame"] = found["Conv2dSame"] = conv_same
    for module, names in _FUNCTIONS.items():
        for name in names:
            def fn(*args: Any, _touch: Any = touch, **kwargs: Any) -> None:
                _touch()

            fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
            attrs[module][name] = found[name] = fn
    attrs["feature_networks.vit"]["__dict__"] = found["vit.__dict__"] = _ByName("feature_networks.vit", "__dict__")
    modules: dict[str, Any] = {}
    for module, members in attrs.items():
        parts = module.split(".")
        for i in range(1, len(parts)):
            modules.setdefault(".".join(parts[:i]), _FakeModule(".".join(parts[:i]), {}))
        modules[module] = _FakeModule(module, members)
    found["__modules__"] = modules
    with _registered(modules):
        yield found


@contextlib.contextmanager
def _registered(modules: dict[str, Any]) -> Iterator[None]:
    with fake_official.registered_modules(modules), fake_official.official_globals():
        yield


def _randomise(module: nn.Module, g: torch.Generator) -> None:
    """Random weights and BatchNorm statistics (so that a wrong mapping shows in the logits)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1 / math.sqrt(max(1, p[0].numel())) if p.ndim > 1 else 0.1
            norm_scale = p.ndim == 1 and name.endswith("weight")  # BatchNorm / LayerNorm scales near 1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if norm_scale else 0.0))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def _lite0(c: dict[str, Any], g: torch.Generator) -> nn.Module:
    """The official split of timm's tf_efficientnet_lite0 (``_make_efficientnet``)."""
    bn = lambda ch: nn.BatchNorm2d(ch, eps=1e-3)  # noqa: E731
    stages, cin = [], 32
    for s, (repeats, k, stride, expand, out) in enumerate(LITE0_STAGES):
        blocks = []
        for i in range(repeats):
            st = stride if i == 0 else 1
            if s == 0:
                b = c["DepthwiseSeparableConv"]()
                b.conv_dw = c["Conv2dSame"](cin, cin, k, st, groups=cin, bias=False)
                b.bn1, b.act1 = bn(cin), nn.ReLU6()
                b.se = nn.Identity()
                b.conv_pw, b.bn2 = nn.Conv2d(cin, out, 1, bias=False), bn(out)
            else:
                mid = cin * expand
                b = c["InvertedResidual"]()
                b.conv_pw, b.bn1, b.act1 = nn.Conv2d(cin, mid, 1, bias=False), bn(mid), nn.ReLU6()
                b.conv_dw = c["Conv2dSame"](mid, mid, k, st, groups=mid, bias=False)
                b.bn2, b.act2, b.se = bn(mid), nn.ReLU6(), nn.Identity()
                b.conv_pwl, b.bn3 = nn.Conv2d(mid, out, 1, bias=False), bn(out)
            b.has_residual = st == 1 and cin == out
            blocks.append(b)
            cin = out
        stages.append(nn.Sequential(*blocks))
    pretrained = nn.Module()
    pretrained.layer0 = nn.Sequential(c["Conv2dSame"](3, 32, 3, 2, bias=False), bn(32), nn.ReLU6(), *stages[0:2])
    pretrained.layer1 = nn.Sequential(*stages[2:3])
    pretrained.layer2 = nn.Sequential(*stages[3:5])
    pretrained.layer3 = nn.Sequential(*stages[5:7])
    pretrained.CHANNELS = np.array([24, 40, 112, 320])
    _randomise(pretrained, g)
    return pretrained


def _deit_small(c: dict[str, Any], timm_state: dict[str, torch.Tensor], g: torch.Generator) -> nn.Module:
    """The official DeiT feature network (``_make_vit_b16_backbone``) around timm's VisionTransformer."""
    d = 384
    vit = c["VisionTransformer"]()
    vit.cls_token = nn.Parameter(torch.zeros(1, 1, d))
    vit.dist_token = nn.Parameter(torch.zeros(1, 1, d))
    vit.pos_embed = nn.Parameter(torch.zeros(1, 198, d))
    vit.patch_embed = c["PatchEmbed"]()
    vit.patch_embed.proj, vit.patch_embed.norm = nn.Conv2d(3, d, 16, 16), nn.Identity()
    vit.pos_drop = nn.Dropout(0.0)
    blocks = []
    for _ in range(12):
        blk = c["Block"]()
        blk.norm1, blk.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        blk.attn = c["Attention"]()
        blk.attn.qkv, blk.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        blk.attn.attn_drop, blk.attn.proj_drop = nn.Dropout(0.0), nn.Dropout(0.0)
        blk.attn.num_heads, blk.attn.scale = 6, (d // 6) ** -0.5
        blk.drop_path = nn.Identity()
        blk.mlp = c["Mlp"]()
        blk.mlp.fc1, blk.mlp.act, blk.mlp.fc2, blk.mlp.drop = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), \
            nn.Dropout(0.0)
        blocks.append(blk)
    vit.blocks = nn.Sequential(*blocks)
    vit.norm, vit.pre_logits = nn.LayerNorm(d, eps=1e-6), nn.Identity()
    vit.head, vit.head_dist = nn.Linear(d, 1000), nn.Linear(d, 1000)
    vit.load_state_dict(timm_state, strict=True)
    pretrained = nn.Module()
    pretrained.model = vit
    activations: dict[str, Any] = {}
    pretrained.activations = activations
    # the forward hooks: closures that dill writes by value (a code object through getattr on dill's module)
    create_code = Call(getattr, Call(c["_import_module"], "dill._dill"), "_create_code")
    for k, i in enumerate((2, 5, 8, 11)):
        code = Call(create_code, 3, 0, 0, 3, 4, 19, b"t\x00|\x02<\x00d\x00S\x00", (None,), ("activations",),
                    ("model", "input", "output"), "vit.py", "hook", 1, b"", (), ("name",))
        cell = Call(c["_create_cell"], str(k + 1))
        hook = Call(c["_create_function"], code, c["vit.__dict__"], "hook", None, (cell,))
        vit.blocks[i]._forward_hooks[k] = hook
    method_type = Call(c["_load_type"], "MethodType")
    vit.forward_flex = Call(method_type, c["forward_flex"], vit)
    vit._resize_pos_embed = Call(method_type, c["_resize_pos_embed"], vit)
    vit.start_index, vit.patch_size = 2, [16, 16]
    vit._probe = Call(setattr, hook, "__qualname__", "get_activation.<locals>.hook")
    sl = c["Slice"]()
    sl.start_index = 2
    feats = (48, 96, 192, 384)

    def readout(ch: int, *tail: nn.Module) -> nn.Sequential:
        tr = c["Transpose"]()
        tr.dim0, tr.dim1 = 1, 2
        return nn.Sequential(sl, tr, nn.Unflatten(2, torch.Size([14, 14])), nn.Conv2d(d, ch, 1), *tail)

    pretrained.layer1 = readout(feats[0], nn.ConvTranspose2d(feats[0], feats[0], 4, 4))
    pretrained.layer2 = readout(feats[1], nn.ConvTranspose2d(feats[1], feats[1], 2, 2))
    pretrained.layer3 = readout(feats[2])
    pretrained.layer4 = readout(feats[3], nn.Conv2d(feats[3], feats[3], 3, 2, 1))
    for m in (pretrained.layer1, pretrained.layer2, pretrained.layer3, pretrained.layer4):
        _randomise(m, g)
    return pretrained


def _projector(c: dict[str, Any], pretrained: nn.Module, taps: tuple[int, ...], name: str,
               g: torch.Generator) -> nn.Module:
    feat = c["F_RandomProj"]()
    feat.pretrained = pretrained
    feat.backbone, feat.cout, feat.expand, feat.proj_type = name, 64, True, 2
    lite = name == LITE0
    feat.normstats = {"mean": [0.5] * 3, "std": [0.5] * 3} if lite else \
        {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    scratch = nn.Module()
    mixed = (64, 128, 256, 512)
    for i in range(4):
        setattr(scratch, f"layer{i}_ccm", nn.Conv2d(taps[i], mixed[i], 1))
    for i in (3, 2, 1, 0):
        fuse = c["FeatureFusionBlock"]()
        fuse.out_conv = nn.Conv2d(mixed[i], mixed[i] // 2 if i else mixed[i], 1)
        fuse.skip_add = torch.ao.nn.quantized.FloatFunctional()
        fuse.expand, fuse.align_corners, fuse.deconv = i > 0, True, False
        setattr(scratch, f"layer{i}_csm", fuse)
    _randomise(scratch, g)
    feat.scratch = scratch
    feat.CHANNELS, feat.RESOLUTIONS = [64, 64, 128, 256], [128, 64, 32, 16]
    return feat


def _sn_conv(*args: Any, **kwargs: Any) -> nn.Module:
    return torch.nn.utils.spectral_norm(nn.Conv2d(*args, **kwargs))


def _heads(c: dict[str, Any], g: torch.Generator, embed: torch.Tensor | None) -> nn.Module:
    disc = c["MultiScaleD"]()
    minis = {}
    for i, (cin, start) in enumerate(zip((64, 64, 128, 256), (128, 64, 32, 16), strict=True)):
        head = c["SingleDiscCond" if embed is not None else "SingleDisc"]()
        nfc = dict(HEAD_TABLE)
        nfc[start] = cin
        layers, size = [], start
        while size > 8:
            blk = c["DownBlock"]()
            blk.main = nn.Sequential(_sn_conv(nfc[size], nfc[size // 2], 4, 2, 1, bias=True), nn.BatchNorm2d(
                nfc[size // 2]), nn.LeakyReLU(0.2, inplace=True))
            layers.append(blk)
            size //= 2
        if embed is None:  # SingleDisc: the last conv ends main
            head.main = nn.Sequential(*layers, _sn_conv(nfc[8], 1, 4, 1, 0, bias=False))
        else:
            head.main = nn.Sequential(*layers)
            head.cls = _sn_conv(nfc[8], 64, 4, 1, 0, bias=False)
            head.embed = nn.Embedding(1000, 320)
            head.embed_proj = c["FullyConnectedLayer"]()
            head.embed_proj.weight = nn.Parameter(torch.zeros(64, 320))
            head.embed_proj.bias = nn.Parameter(torch.zeros(64))
            head.cmap_dim = 64
        _randomise(head, g)
        with torch.no_grad():
            if embed is not None:
                head.embed.weight.copy_(embed)
            for m in head.modules():  # power iterations as in training, so that u, v are not random vectors
                if hasattr(m, "weight_u"):
                    m.train()
                    for _ in range(3):
                        m(torch.zeros(1, m.in_channels, 8, 8))
        minis[str(i)] = head
    disc.mini_discs = nn.ModuleDict(minis)
    return disc


def official_d(
    c: dict[str, Any], deit_timm_state: dict[str, torch.Tensor] | None, seed: int = 0, conditional: bool = True
) -> nn.Module:
    """The official D with DeiT-small distilled (left out when ``deit_timm_state`` is None) and
    EfficientNet-lite0; conditional heads (ImageNet embeddings) or unconditional ones."""
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(1000, 320, generator=g) if conditional else None
    d = c["ProjectedDiscriminator"]()
    names = [LITE0] if deit_timm_state is None else [DEIT_S, LITE0]
    d.backbones, d.diffaug, d.interp224 = names, True, True
    features = {LITE0: _projector(c, _lite0(c, g), (24, 40, 112, 320), LITE0, g)}
    if deit_timm_state is not None:
        features[DEIT_S] = _projector(c, _deit_small(c, deit_timm_state, g), (48, 96, 192, 384), DEIT_S, g)
    d.feature_networks = nn.ModuleDict({n: features[n] for n in names})
    d.discriminators = nn.ModuleDict({n: _heads(c, g, embed) for n in names})
    return d.eval()


class _OfficialPickler(pickle.Pickler):
    """Writes ``FullyConnectedLayer`` through the persistence reconstructor, as the official code does."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj).__name__ == "FullyConnectedLayer" and isinstance(obj, nn.Module):
            state = {
                "training": False, "_parameters": collections.OrderedDict(obj._parameters),
                "_buffers": collections.OrderedDict(), "_non_persistent_buffers_set": set(),
                "_modules": collections.OrderedDict(), "activation": "lrelu", "lr_multiplier": 1,
                "weight_gain": 1 / math.sqrt(320), "bias_gain": 1, "in_features": 320, "out_features": 64,
                "_init_args": (320, 64), "_init_kwargs": fake_official.easy_dict({"activation": "lrelu"}),
            }
            return fake_official.Persistent("FullyConnectedLayer", state).__reduce__()
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` (inside :func:`official_d_globals`)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _OfficialPickler(buf, protocol=4).dump(obj)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# An independent forward of the official D from its state dict (eval mode, no DiffAugment)


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, eps: float) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        False, 0.0, eps)


def _lite0_taps(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor) -> list[torch.Tensor]:
    x = F.relu6(_bn(F.conv2d(_same_pad(x, 3, 2), sd[p + "layer0.0.weight"], stride=2), sd, p + "layer0.1.", 1e-3))
    paths = ("layer0.3", "layer0.4", "layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer3.1")
    taps = []
    for s, ((repeats, k, stride, _, _), path) in enumerate(zip(LITE0_STAGES, paths, strict=True)):
        for i in range(repeats):
            q, st = f"{p}{path}.{i}.", stride if i == 0 else 1
            y = x
            if s > 0:
                y = F.relu6(_bn(F.conv2d(y, sd[q + "conv_pw.weight"]), sd, q + "bn1.", 1e-3))
            dw, bn_dw = sd[q + "conv_dw.weight"], (q + "bn1." if s == 0 else q + "bn2.")
            y = F.relu6(_bn(F.conv2d(_same_pad(y, k, st), dw, stride=st, groups=dw.shape[0]), sd, bn_dw, 1e-3))
            pw, bn_pw = (q + "conv_pw.weight", q + "bn2.") if s == 0 else (q + "conv_pwl.weight", q + "bn3.")
            y = _bn(F.conv2d(y, sd[pw]), sd, bn_pw, 1e-3)
            x = x + y if (st == 1 and x.shape == y.shape) else y
        if s in (1, 2, 4, 6):
            taps.append(x)
    return taps


def _deit_taps(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor, vit_blocks) -> list[torch.Tensor]:
    outs = []
    for k, block in enumerate((2, 5, 8, 11)):
        t = vit_blocks[block][:, 2:].transpose(1, 2).reshape(x.shape[0], -1, 14, 14)
        q = f"{p}layer{k + 1}."
        t = F.conv2d(t, sd[q + "3.weight"], sd[q + "3.bias"])
        if k == 0:
            t = F.conv_transpose2d(t, sd[q + "4.weight"], sd[q + "4.bias"], stride=4)
        elif k == 1:
            t = F.conv_transpose2d(t, sd[q + "4.weight"], sd[q + "4.bias"], stride=2)
        elif k == 3:
            t = F.conv2d(t, sd[q + "4.weight"], sd[q + "4.bias"], stride=2, padding=1)
        outs.append(t)
    return outs


def _sn_weight(sd: dict[str, torch.Tensor], q: str) -> torch.Tensor:
    w = sd[q + "weight_orig"]
    sigma = torch.dot(sd[q + "weight_u"], w.reshape(w.shape[0], -1) @ sd[q + "weight_v"])
    return w / sigma


def independent_logits(
    sd: dict[str, torch.Tensor], img: torch.Tensor, c: torch.Tensor, deit_blocks: Any = None
) -> torch.Tensor:
    """Logits of the official D with state ``sd`` for ``img`` in [-1, 1] (224 input for both backbones, eval
    mode, no augmentation); ``deit_blocks(x)`` returns the outputs of the 12 DeiT blocks (``None``: no DeiT)."""
    logits = []
    backbones = ((DEIT_S, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (LITE0, (0.5,) * 3, (0.5,) * 3))
    for bb, mean, std in backbones[1:] if deit_blocks is None else backbones:
        x = ((img + 1) / 2 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        x = F.interpolate(x, 224, mode="bilinear", align_corners=False)
        p = f"feature_networks.{bb}."
        taps = _lite0_taps(sd, p + "pretrained.", x) if bb == LITE0 else \
            _deit_taps(sd, p + "pretrained.", x, deit_blocks(x))
        mixed = [F.conv2d(t, sd[f"{p}scratch.layer{i}_ccm.weight"], sd[f"{p}scratch.layer{i}_ccm.bias"])
                 for i, t in enumerate(taps)]
        fused: list[torch.Tensor] = [None] * 4  # type: ignore[list-item]
        prev = None
        for i in (3, 2, 1, 0):
            z = mixed[i] if prev is None else prev + mixed[i]
            z = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True)
            prev = fused[i] = F.conv2d(z, sd[f"{p}scratch.layer{i}_csm.out_conv.weight"],
                                       sd[f"{p}scratch.layer{i}_csm.out_conv.bias"])
        for i in range(4):
            q = f"discriminators.{bb}.mini_discs.{i}."
            h = fused[i]
            j = 0
            while f"{q}main.{j}.main.0.weight_orig" in sd:
                r = f"{q}main.{j}.main."
                h = F.conv2d(h, _sn_weight(sd, r + "0."), sd[r + "0.bias"], stride=2, padding=1)
                h = F.leaky_relu(_bn(h, sd, r + "1.", 1e-5), 0.2)
                j += 1
            if f"{q}cls.weight_orig" not in sd:  # unconditional: the last conv is main.<j>
                logits.append(F.conv2d(h, _sn_weight(sd, f"{q}main.{j}.")).flatten(1))
                continue
            out = F.conv2d(h, _sn_weight(sd, q + "cls."))
            e = sd[q + "embed.weight"][c.argmax(1)]
            cmap = F.leaky_relu(e @ (sd[q + "embed_proj.weight"] / math.sqrt(320)).T + sd[q + "embed_proj.bias"],
                                0.2) * math.sqrt(2)
            logits.append(((out * cmap[:, :, None, None]).sum(1) / 8).flatten(1))
    return torch.cat(logits, dim=1)
