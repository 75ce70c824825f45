"""Official StyleGAN2 (StyleGAN2-ADA-PyTorch / StyleGAN3 repository) networks -> styleforge StyleGAN2
networks.

Recognised by structure, not by class name:

- generator: sub-modules ``mapping`` and ``synthesis``, and ``synthesis.b4`` holds the learned constant
``const``
  (a StyleGAN3 or StyleGAN-XL synthesis network has ``synthesis.input`` instead);
- discriminator: blocks ``b{R}, ..., b8`` and an epilogue ``b4`` with ``conv``, ``fc`` and ``out`` layers.

The constructor arguments of the pickle become our flat config (official ``mapping_kwargs`` -> ``mapping_*``,
``epilogue_kwargs`` -> ``mbstd_*``, ...); an argument we do not know is an error rather than silently ignored.
Our module names equal the official ones, so the tables below are mostly identity rules; the resampling
filters, which we derive from the config instead of storing, are *checked* against the pickle instead of
loaded.
"""

from __future__ import annotations

from typing import Any

from styleforge.convert.official import ConversionError, KeyRule, remap_state_dict
from styleforge.convert.safe_pickle import ModuleStub, PersistentObject
from styleforge.models.base import Network

__all__ = [
    "CONVERTERS",
    "GENERATOR_RULES",
    "DISCRIMINATOR_RULES",
    "is_stylegan2_generator",
    "is_stylegan2_discriminator",
    "generator_config",
    "discriminator_config",
    "convert_generator",
    "convert_discriminator",
]

#: official pickles without ``fused_modconv_default`` (StyleGAN2-ADA) fuse the modulated convolution exactly
#: when not training, which is our ``"inference_only"`` (the fused and non-fused paths compute the same
#: function)
ADA_FUSED_MODCONV = "inference_only"
#: StyleGAN2-ADA-PyTorch's default decay of the tracked ``w_avg`` (the StyleGAN3 repository uses 0.998); it
#: only matters when training continues from the converted network
ADA_W_AVG_BETA = 0.995
#: arguments without a config field of ours, accepted when they hold the only value we implement (the
#: TF-to-PyTorch conversion of the official StyleGAN2 weights writes them out explicitly)
_IMPLIED = {"activation": "lrelu", "embed_features": None}

_FILTER_NOTE = "derived from the config (resample_filter); must equal the stored filter"

GENERATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"mapping\.w_avg", r"mapping.w_avg"),
    KeyRule(r"mapping\.(embed|fc\d+)\.(weight|bias)", r"mapping.\1.\2"),
    KeyRule(r"synthesis\.b(\d+)\.const", r"synthesis.b\1.const"),
    KeyRule(
        r"synthesis\.b(\d+)\.resample_filter", r"synthesis.b\1.resample_filter", "check", note=_FILTER_NOTE
    ),
    KeyRule(
        r"synthesis\.b(\d+)\.(conv0|conv1)\.(weight|bias|noise_strength|noise_const)", r"synthesis.b\1.\2.\3"
    ),
    KeyRule(
        r"synthesis\.b(\d+)\.(conv0|conv1)\.resample_filter",
        r"synthesis.b\1.\2.resample_filter",
        "check",
        note=_FILTER_NOTE,
    ),
    KeyRule(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.(weight|bias)", r"synthesis.b\1.\2.affine.\3"),
    KeyRule(r"synthesis\.b(\d+)\.torgb\.(weight|bias)", r"synthesis.b\1.torgb.\2"),
    KeyRule(r"synthesis\.b(\d+)\.skip\.weight", r"synthesis.b\1.skip.weight"),
    KeyRule(
        r"synthesis\.b(\d+)\.skip\.resample_filter",
        r"synthesis.b\1.skip.resample_filter",
        "check",
        note=_FILTER_NOTE,
    ),
)

DISCRIMINATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"b(\d+)\.resample_filter", r"b\1.resample_filter", "check", note=_FILTER_NOTE),
    KeyRule(r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)", r"b\1.\2.\3"),
    KeyRule(
        r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv)\.resample_filter",
        r"b\1.\2.resample_filter",
        "check",
        note=_FILTER_NOTE,
    ),
    KeyRule(r"mapping\.(embed|fc\d+)\.(weight|bias)", r"mapping.\1.\2"),
)

# official constructor argument -> our config field, per nesting level
_G_TOP = {
    "z_dim": "z_dim",
    "c_dim": "c_dim",
    "w_dim": "w_dim",
    "img_resolution": "img_resolution",
    "img_channels": "img_channels",
}
_G_MAPPING = {
    "num_layers": "mapping_layers",
    "embed_features": "mapping_embed_features",
    "layer_features": "mapping_layer_features",
    "activation": "mapping_activation",
    "lr_multiplier": "mapping_lr_multiplier",
    "w_avg_beta": "w_avg_beta",
}
_G_SYNTHESIS = {
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "num_fp16_res": "num_fp16_res",
    "conv_clamp": "conv_clamp",
    "architecture": "architecture",
    "resample_filter": "resample_filter",
    "use_noise": "use_noise",
    "fused_modconv_default": "fused_modconv_default",
    "fp16_channels_last": "fp16_channels_last",
}
_D_TOP = {
    "c_dim": "c_dim",
    "img_resolution": "img_resolution",
    "img_channels": "img_channels",
    "architecture": "architecture",
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "num_fp16_res": "num_fp16_res",
    "conv_clamp": "conv_clamp",
    "cmap_dim": "cmap_dim",
}
_D_BLOCK = {
    "freeze_layers": "freeze_layers",
    "activation": "activation",
    "resample_filter": "resample_filter",
    "fp16_channels_last": "fp16_channels_last",
    "architecture": "architecture",
    "conv_clamp": "conv_clamp",
}
_D_MAPPING = {
    "num_layers": "mapping_layers",
    "layer_features": "mapping_layer_features",
    "activation": "mapping_activation",
    "lr_multiplier": "mapping_lr_multiplier",
}
_D_EPILOGUE = {
    "mbstd_group_size": "mbstd_group_size",
    "mbstd_num_channels": "mbstd_num_channels",
    "activation": "activation",
    "architecture": "architecture",
    "conv_clamp": "conv_clamp",
}


def _translate(
    kwargs: dict[str, Any], table: dict[str, str], where: str, out: dict[str, Any], unknown: list[str]
) -> None:
    for key, value in kwargs.items():
        if key not in table:
            if not (key in _IMPLIED and value == _IMPLIED[key]):
                unknown.append(f"{where}{key}={value!r}")
            continue
        if isinstance(value, list):
            value = tuple(value)
        out[table[key]] = value


def _unknown_error(what: str, unknown: list[str]) -> ConversionError:
    return ConversionError(
        f"The official {what} was built with constructor arguments styleforge does not support: "
        f"{', '.join(unknown)}. It may come from a modified fork of the official code."
    )


def generator_config(kwargs: dict[str, Any]) -> Any:
    """Our :class:`StyleGAN2GeneratorConfig` from the official ``Generator`` constructor arguments.

    Accepts both the flat synthesis arguments of the StyleGAN3 repository and the nested ``synthesis_kwargs``
    of StyleGAN2-ADA-PyTorch. Arguments not given keep the official defaults (which our config defaults
    equal), except ``fused_modconv_default`` (see :data:`ADA_FUSED_MODCONV`) and, for StyleGAN2-ADA pickles
    (recognised by their nested ``synthesis_kwargs``), ``w_avg_beta`` (see :data:`ADA_W_AVG_BETA`).
    """
    from styleforge.models.stylegan2 import StyleGAN2GeneratorConfig

    obj_kwargs, kwargs = kwargs, dict(kwargs)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    out: dict[str, Any] = {"fused_modconv_default": ADA_FUSED_MODCONV}
    if "synthesis_kwargs" in obj_kwargs:
        out["w_avg_beta"] = ADA_W_AVG_BETA
    unknown: list[str] = []
    top = {k: v for k, v in kwargs.items() if k in _G_TOP}
    synthesis.update({k: v for k, v in kwargs.items() if k not in _G_TOP})
    _translate(top, _G_TOP, "", out, unknown)
    _translate(mapping, _G_MAPPING, "mapping_kwargs.", out, unknown)
    _translate(synthesis, _G_SYNTHESIS, "", out, unknown)
    if unknown:
        raise _unknown_error("StyleGAN2 generator", unknown)
    return StyleGAN2GeneratorConfig(**out)


def discriminator_config(kwargs: dict[str, Any]) -> Any:
    """Our :class:`StyleGAN2DiscriminatorConfig` from the official ``Discriminator`` constructor arguments."""
    from styleforge.models.stylegan2 import StyleGAN2DiscriminatorConfig

    kwargs = dict(kwargs)
    out: dict[str, Any] = {}
    unknown: list[str] = []
    block = dict(kwargs.pop("block_kwargs", None) or {})
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    epilogue = dict(kwargs.pop("epilogue_kwargs", None) or {})
    _translate(kwargs, _D_TOP, "", out, unknown)
    _translate(block, _D_BLOCK, "block_kwargs.", out, unknown)
    _translate(mapping, _D_MAPPING, "mapping_kwargs.", out, unknown)
    _translate(epilogue, _D_EPILOGUE, "epilogue_kwargs.", out, unknown)
    if unknown:
        raise _unknown_error("StyleGAN2 discriminator", unknown)
    return StyleGAN2DiscriminatorConfig(**out)


def _has_params(stub: ModuleStub | None, *names: str) -> bool:
    return stub is not None and all(n in stub.parameters_dict or n in stub.buffers_dict for n in names)


def is_stylegan2_generator(obj: ModuleStub) -> bool:
    """A StyleGAN2 generator: ``mapping`` + ``synthesis`` whose 4x4 block holds the learned constant."""
    if not isinstance(obj, PersistentObject) or "img_resolution" not in obj.init_kwargs:
        return False
    children = obj.children
    synthesis = children.get("synthesis")
    if "mapping" not in children or synthesis is None or "input" in synthesis.children:
        return False
    return _has_params(synthesis.children.get("b4"), "const")


def is_stylegan2_discriminator(obj: ModuleStub) -> bool:
    """A StyleGAN2 discriminator: blocks ``b{R}..b8``, epilogue ``b4`` with ``conv``, ``fc``, ``out``."""
    if not isinstance(obj, PersistentObject):
        return False
    res = obj.init_kwargs.get("img_resolution")
    children = obj.children
    epilogue = children.get("b4")
    if not isinstance(res, int) or epilogue is None or (res > 4 and f"b{res}" not in children):
        return False
    return all(name in epilogue.children for name in ("conv", "fc", "out"))


def convert_generator(obj: PersistentObject) -> Network:
    """Our :class:`StyleGAN2Generator` holding the weights of the official generator ``obj``."""
    from styleforge.models.stylegan2 import StyleGAN2Generator

    net = StyleGAN2Generator(generator_config(obj.init_kwargs))
    remap_state_dict(obj.state_dict(), GENERATOR_RULES, net, what="StyleGAN2 generator")
    return net


def convert_discriminator(obj: PersistentObject) -> Network:
    """Our :class:`StyleGAN2Discriminator` holding the weights of the official discriminator ``obj``."""
    from styleforge.models.stylegan2 import StyleGAN2Discriminator

    net = StyleGAN2Discriminator(discriminator_config(obj.init_kwargs))
    remap_state_dict(obj.state_dict(), DISCRIMINATOR_RULES, net, what="StyleGAN2 discriminator")
    return net


CONVERTERS = [
    (is_stylegan2_generator, convert_generator),
    (is_stylegan2_discriminator, convert_discriminator),
]
