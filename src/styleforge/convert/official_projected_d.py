"""StyleGAN-XL's projected discriminator from an official training snapshot onto
:class:`~styleforge.models.projected_discriminator.ProjectedDiscriminator`.

The official D (``pg_modules.discriminator.ProjectedDiscriminator``, a plain ``nn.Module`` pickle read by the
safe unpickler as inert stubs, never built) holds, per backbone ``<bb>``:

- ``feature_networks.<bb>.pretrained.*``: the frozen timm network. EfficientNet-lite0 (``tf_efficientnet_lite0``)
  is split as ``layer0 = (conv_stem, bn1, act1, blocks[0], blocks[1])``, ``layer1 = (blocks[2],)``, ``layer2 =
  (blocks[3], blocks[4])``, ``layer3 = (blocks[5], blocks[6])`` with timm's block names (``conv_dw``, ``bn1``,
  ``conv_pw``, ``bn2`` for the depthwise-separable first block; ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``,
  ``conv_pwl``, ``bn3`` for inverted residuals). DeiT (``deit_base_distilled_patch16_224``,
  ``deit_small_distilled_patch16_224``) keeps the timm model under ``pretrained.model.*`` and the DPT readout
  under ``pretrained.layer<1..4>.<3|4>.*``;
- ``feature_networks.<bb>.scratch.layer<i>_ccm.*`` and ``scratch.layer<i>_csm.out_conv.*``: the random CCM/CSM;
- ``discriminators.<bb>.mini_discs.<i>.main.<j>.main.{0,1}.*``: DownBlocks (spectral-norm conv with
  ``weight_orig``/``weight_u``/``weight_v``/``bias``, BatchNorm), then the last spectral-norm conv
  ``main.<n>.*`` (unconditional) or ``cls.*`` with ``embed.weight`` and ``embed_proj.{weight,bias}``
  (conditional; the embedding has ImageNet's 1000 rows).

:func:`projected_d_key_rules` is the table (a pure function of the backbone names and structure);
:func:`convert_projected_d` builds our D from the stub's attributes and loads the remapped state strictly (every
official key claimed, every key of ours filled, every shape equal). Backbones other than these are not supported:
:func:`convert_projected_d_or_reason` then returns the reason instead of a network.
"""

from __future__ import annotations

import re
from typing import Any

from styleforge.convert.official import ConversionError, KeyRule, _format_problems, remap_state_dict
from styleforge.convert.safe_pickle import InertObject, ModuleStub, PersistentObject, find_inert
from styleforge.feature_nets.efficientnet_lite import LITE0_STAGES
from styleforge.models.projected_discriminator import HEAD_END_SIZE, ProjectedDConfig, ProjectedDiscriminator
from styleforge.utils.errors import UserInputError

__all__ = [
    "OFFICIAL_BACKBONES",
    "is_projected_d",
    "projected_d_config_from_stub",
    "projected_d_key_rules",
    "convert_projected_d",
    "convert_projected_d_or_reason",
]

#: official (timm) backbone name -> ours
OFFICIAL_BACKBONES = {
    "tf_efficientnet_lite0": "efficientnet_lite0",
    "deit_base_distilled_patch16_224": "deit_base_distilled",
    "deit_small_distilled_patch16_224": "deit_small_distilled",
}
#: where timm's lite0 stages sit in the official split (``pretrained.<path>``), stage by stage
_LITE0_STAGE_PATHS = ("layer0.3", "layer0.4", "layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer3.1")
#: timm block layer -> ours, for the depthwise-separable block (no expansion) and inverted residuals
_DS_NAMES = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
_IR_NAMES = {
    "conv_pw": "expand.conv",
    "bn1": "expand.bn",
    "conv_dw": "depthwise.conv",
    "bn2": "depthwise.bn",
    "conv_pwl": "project.conv",
    "bn3": "project.bn",
}
_CLASS_NAME = "ProjectedDiscriminator"
_SN = r"(weight_orig|weight_u|weight_v|bias)"


class _Unsupported(Exception):
    """The stub is a projected D that styleforge cannot represent (the message says why)."""


def is_projected_d(obj: Any) -> bool:
    """``obj`` is a pickled StyleGAN-XL / Projected GAN discriminator (by its class name)."""
    name = obj.global_name if isinstance(obj, InertObject) else getattr(obj, "class_name", "")
    return isinstance(obj, ModuleStub) and name.rsplit(".", 1)[-1] == _CLASS_NAME


def _attr(obj: ModuleStub, name: str, default: Any) -> Any:
    if isinstance(obj, PersistentObject) and name in obj.init_kwargs:
        return obj.init_kwargs[name]
    return obj.attr(name, default)


def _lite0_rules(off: str, ours: str) -> list[KeyRule]:
    src, dst = rf"feature_networks\.{off}\.pretrained\.", f"features.{ours}.backbone."
    rules = [
        KeyRule(src + r"layer0\.0\.weight", dst + "stem.conv.weight", note="conv_stem"),
        KeyRule(src + r"layer0\.1\.(\w+)", dst + r"stem.bn.\1", note="bn1 (act1 has no tensors)"),
    ]
    flat = 0
    for stage, (spec, path) in enumerate(zip(LITE0_STAGES, _LITE0_STAGE_PATHS, strict=True)):
        names = _DS_NAMES if stage == 0 else _IR_NAMES
        for i in range(spec.repeats):
            for theirs, mine in names.items():
                rules.append(
                    KeyRule(src + re.escape(path) + rf"\.{i}\.{theirs}\.(\w+)",
                            dst + rf"blocks.{flat}.{mine}.\1", note=f"timm blocks[{stage}][{i}]")
                )
            flat += 1
    return rules


def _deit_rules(off: str, ours: str) -> list[KeyRule]:
    src, dst = rf"feature_networks\.{off}\.pretrained\.", f"features.{ours}."
    rules = [
        KeyRule(src + r"model\.patch_embed\.proj\.(weight|bias)", dst + r"backbone.patch_embed.\1"),
        KeyRule(src + r"model\.(cls_token|dist_token|pos_embed)", dst + r"backbone.\1"),
        KeyRule(src + r"model\.((?:blocks\.\d+|norm|head|head_dist)\..+)", dst + r"backbone.\1", note="timm names"),
    ]
    for k in range(4):
        rules.append(KeyRule(src + rf"layer{k + 1}\.3\.(weight|bias)", dst + rf"readout.proj.{k}.\1"))
    for k in (0, 1, 3):  # ConvT x4, ConvT x2, (identity at 14 px), conv stride 2
        rules.append(KeyRule(src + rf"layer{k + 1}\.4\.(weight|bias)", dst + rf"readout.resample.{k}.\1"))
    return rules


def projected_d_key_rules(backbones: dict[str, str]) -> list[KeyRule]:
    """The conversion table for an official projected D with ``{official backbone name: ours}``."""
    rules: list[KeyRule] = []
    for off, ours in backbones.items():
        o = re.escape(off)
        rules += _lite0_rules(o, ours) if ours == "efficientnet_lite0" else _deit_rules(o, ours)
        scratch, feats = rf"feature_networks\.{o}\.scratch\.", f"features.{ours}."
        rules += [
            KeyRule(scratch + r"layer([0-3])_ccm\.(weight|bias)", feats + r"ccm.\1.\2"),
            KeyRule(scratch + r"layer([0-3])_csm\.out_conv\.(weight|bias)", feats + r"csm.\1.\2"),
        ]
        disc, heads = rf"discriminators\.{o}\.mini_discs\.([0-3])\.", f"heads.{ours}.\\1."
        rules += [
            KeyRule(disc + rf"main\.(\d+)\.main\.0\.{_SN}", heads + r"blocks.\2.conv.\3", note="DownBlock SN conv"),
            KeyRule(disc + r"main\.(\d+)\.main\.1\.(\w+)", heads + r"blocks.\2.bn.\3", note="DownBlock BatchNorm"),
            KeyRule(disc + rf"main\.\d+\.{_SN}", heads + r"out.\2", note="last SN conv (unconditional)"),
            KeyRule(disc + rf"cls\.{_SN}", heads + r"out.\2", note="last SN conv (conditional)"),
            KeyRule(disc + r"embed\.weight", heads + "embed.weight"),
            KeyRule(disc + r"embed_proj\.(weight|bias)", heads + r"embed_proj.\2"),
        ]
    return rules


def _backbones(obj: ModuleStub) -> dict[str, str]:
    try:
        names = list(obj.get_submodule("feature_networks").children)
    except KeyError as e:
        raise _Unsupported("it has no feature_networks") from e
    unknown = [n for n in names if n not in OFFICIAL_BACKBONES]
    if unknown or not names:
        raise _Unsupported(
            f"its feature network(s) {unknown or '(none)'} are not among the supported "
            f"{', '.join(OFFICIAL_BACKBONES)}"
        )
    return {n: OFFICIAL_BACKBONES[n] for n in names}


def projected_d_config_from_stub(obj: ModuleStub) -> ProjectedDConfig:
    """Our config for the official D ``obj``: backbones, conditioning (embedding rows and ``cmap_dim`` from the
    weights), DiffAugment on/off (``diffaug``), ``interp224``, and the heads' nominal size from the number of
    DownBlocks of the finest head.

    Raises:
        ConversionError: a backbone or structure styleforge does not support.
    """
    try:
        backbones = _backbones(obj)
        first = next(iter(backbones))
        head0 = obj.get_submodule(f"discriminators.{first}.mini_discs.0")
    except _Unsupported as e:
        raise ConversionError(str(e)) from e
    except KeyError as e:
        raise ConversionError(f"it has no discriminator head for {first}: {e}") from e
    state = head0.state_dict()
    conditional = "embed.weight" in state
    n_blocks = sum(1 for k in state if k.startswith("main.") and k.endswith(".main.0.weight_orig"))
    cmap_dim = state["cls.weight_orig"].shape[0] if "cls.weight_orig" in state else 64
    rows = state["embed.weight"].shape[0] if conditional else 0
    interp = _attr(obj, "interp224", None)
    return ProjectedDConfig(
        backbones=tuple(backbones.values()),
        c_dim=rows,  # the official heads index the embedding by argmax(c): c has (at most) its rows
        cmap_dim=int(cmap_dim),
        diffaugment="color,translation,cutout" if _attr(obj, "diffaug", True) else "",
        embed_classes=rows,
        head_nominal_resolution=2 * HEAD_END_SIZE * 2**n_blocks,
        interp224=None if interp is None else bool(interp),
    )


def convert_projected_d(obj: ModuleStub) -> ProjectedDiscriminator:
    """Our :class:`ProjectedDiscriminator` holding exactly the official D's weights (in eval mode).

    ``img_resolution`` is not stored in the D; the converted network records 0 (unknown) and follows the
    official ``interp224`` attribute for EfficientNet-lite0's resizing.

    Raises:
        ConversionError: unsupported backbones, or weights that do not fit (all problems listed).
    """
    config = projected_d_config_from_stub(obj)
    backbones = _backbones(obj)
    official = obj.state_dict()
    D = ProjectedDiscriminator(config, 0)
    remap_state_dict(official, projected_d_key_rules(backbones), D, what="StyleGAN-XL projected discriminator")
    return D.eval()


def convert_projected_d_or_reason(key: str, obj: ModuleStub) -> tuple[ProjectedDiscriminator | None, str | None]:
    """``(network, None)`` when ``obj`` converts, else ``(None, why)``: unsupported backbones or a structure that
    differs from the official one; the reason names the classes the pickled D holds."""
    try:
        return convert_projected_d(obj), None
    except (ConversionError, UserInputError) as e:
        detail = str(e)[:1].lower() + str(e)[1:]
    except (KeyError, AttributeError, TypeError, ValueError) as e:  # a malformed stub
        detail = f"its structure is not the official one ({type(e).__name__}: {e})"
    held = _format_problems("classes it holds", find_inert(obj))
    return None, (
        f"{key} is StyleGAN-XL's projected discriminator ({_CLASS_NAME}), but {detail}; styleforge does not support "
        f"it, so it was read without running anything and left out ({held})."
    )

