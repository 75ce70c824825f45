"""TensorFlow-era StyleGAN2 / StyleGAN2-ADA networks (``dnnlib.tflib.network.Network``) -> styleforge StyleGAN2
networks.

The TensorFlow releases pickle a tuple ``(G, D, Gs)`` (``Gs`` is the moving average, our ``G_ema``). The safe
unpickler turns each network into a :class:`~styleforge.convert.safe_pickle.TFNetworkStub` (variables as numpy
arrays, build source dropped unread). This module maps them onto our StyleGAN2 networks exactly as NVIDIA's
PyTorch port converts them:

- constructor arguments: ``latent_size`` -> ``z_dim``, ``dlatent_size`` -> ``w_dim``, ``fmap_base`` ->
  ``channel_base = 2 * fmap_base`` (the TensorFlow code halves it when computing channel counts),
  ``resample_kernel`` -> ``resample_filter``, ...; an argument we do not know is an error;
- weights: TensorFlow convolutions are ``[kh, kw, in, out]`` and become ``[out, in, kh, kw]``; dense layers are
  ``[in, out]`` and are transposed; the generator's up-sampling convolution and skip weights are flipped in
  both spatial axes (TensorFlow applies them as a transposed convolution the other way round); the modulation
  biases are stored without their constant ``+1``; per-layer noise ``noise{k}`` and ``dlatent_avg`` become
  ``noise_const`` and ``w_avg``; ``lod`` (the progressive-growing level of detail, always 0) is dropped.

Which network a stub is comes from its variables (``dlatent_avg`` and a ``synthesis`` component for a
generator, ``Output/weight`` for a discriminator), not from the build function's name alone.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from styleforge.convert.official import ConversionError, KeyRule, remap_state_dict
from styleforge.convert.safe_pickle import TFNetworkStub
from styleforge.models.base import Network

__all__ = [
    "CONVERTERS",
    "STUB_TYPE",
    "TF_GENERATOR_RULES",
    "TF_DISCRIMINATOR_RULES",
    "MIN_TF_VERSION",
    "is_tf_generator",
    "is_tf_discriminator",
    "tf_generator_kwargs",
    "tf_discriminator_kwargs",
    "convert_tf_generator",
    "convert_tf_discriminator",
]

#: oldest ``dnnlib.tflib.network.Network`` state version the conversion understands (as NVIDIA's port)
MIN_TF_VERSION = 4
#: the TensorFlow code computes channels as ``fmap_base / 2 ** (stage + 1)``; ours as ``channel_base / res``
FMAP_BASE_FACTOR = 2
#: TensorFlow stores the modulation bias without the constant 1 its layer adds
MOD_BIAS_OFFSET = 1.0
#: static keyword arguments that only steer TensorFlow graph building or sampling and have no weights
_IGNORED_KWARGS = frozenset({"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure",
                             "conditioning", "fused_modconv", "is_template_graph", "components"})


def _conv(t: torch.Tensor) -> torch.Tensor:
    return t.permute(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]


def _flipped_conv(t: torch.Tensor) -> torch.Tensor:
    return t.flip(0, 1).permute(3, 2, 0, 1)


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.t()


def _mod_bias(t: torch.Tensor) -> torch.Tensor:
    return t + MOD_BIAS_OFFSET


def _first(t: torch.Tensor) -> torch.Tensor:
    return t[0]


def _noise(t: torch.Tensor) -> torch.Tensor:
    return t[0, 0]


_LOD_NOTE = "progressive-growing level of detail; always 0 in StyleGAN2"
_R = r"(\d+)x\d+"  # "{r}x{r}" block scope

TF_GENERATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"(synthesis/)?lod", action="drop", note=_LOD_NOTE),
    KeyRule(r"dlatent_avg", r"mapping.w_avg"),
    KeyRule(r"mapping/LabelEmbed/weight", r"mapping.embed.weight", transform=_dense),
    KeyRule(r"mapping/LabelEmbed/bias", r"mapping.embed.bias"),
    KeyRule(r"mapping/Dense(\d+)/weight", r"mapping.fc\1.weight", transform=_dense),
    KeyRule(r"mapping/Dense(\d+)/bias", r"mapping.fc\1.bias"),
    KeyRule(r"synthesis/4x4/Const/const", r"synthesis.b4.const", transform=_first),
    KeyRule(r"synthesis/4x4/Conv/weight", r"synthesis.b4.conv1.weight", transform=_conv),
    KeyRule(r"synthesis/4x4/Conv/(bias|noise_strength)", r"synthesis.b4.conv1.\1"),
    KeyRule(r"synthesis/4x4/Conv/noise_const", r"synthesis.b4.conv1.noise_const", transform=_noise),
    KeyRule(r"synthesis/4x4/Conv/mod_weight", r"synthesis.b4.conv1.affine.weight", transform=_dense),
    KeyRule(r"synthesis/4x4/Conv/mod_bias", r"synthesis.b4.conv1.affine.bias", transform=_mod_bias),
    KeyRule(rf"synthesis/{_R}/Conv0_up/weight", r"synthesis.b\1.conv0.weight", transform=_flipped_conv),
    KeyRule(rf"synthesis/{_R}/Conv0_up/(bias|noise_strength)", r"synthesis.b\1.conv0.\2"),
    KeyRule(rf"synthesis/{_R}/Conv0_up/noise_const", r"synthesis.b\1.conv0.noise_const", transform=_noise),
    KeyRule(rf"synthesis/{_R}/Conv0_up/mod_weight", r"synthesis.b\1.conv0.affine.weight", transform=_dense),
    KeyRule(rf"synthesis/{_R}/Conv0_up/mod_bias", r"synthesis.b\1.conv0.affine.bias", transform=_mod_bias),
    KeyRule(rf"synthesis/{_R}/Conv1/weight", r"synthesis.b\1.conv1.weight", transform=_conv),
    KeyRule(rf"synthesis/{_R}/Conv1/(bias|noise_strength)", r"synthesis.b\1.conv1.\2"),
    KeyRule(rf"synthesis/{_R}/Conv1/noise_const", r"synthesis.b\1.conv1.noise_const", transform=_noise),
    KeyRule(rf"synthesis/{_R}/Conv1/mod_weight", r"synthesis.b\1.conv1.affine.weight", transform=_dense),
    KeyRule(rf"synthesis/{_R}/Conv1/mod_bias", r"synthesis.b\1.conv1.affine.bias", transform=_mod_bias),
    KeyRule(rf"synthesis/{_R}/ToRGB/weight", r"synthesis.b\1.torgb.weight", transform=_conv),
    KeyRule(rf"synthesis/{_R}/ToRGB/bias", r"synthesis.b\1.torgb.bias"),
    KeyRule(rf"synthesis/{_R}/ToRGB/mod_weight", r"synthesis.b\1.torgb.affine.weight", transform=_dense),
    KeyRule(rf"synthesis/{_R}/ToRGB/mod_bias", r"synthesis.b\1.torgb.affine.bias", transform=_mod_bias),
    KeyRule(rf"synthesis/{_R}/Skip/weight", r"synthesis.b\1.skip.weight", transform=_flipped_conv),
)

TF_DISCRIMINATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"lod", action="drop", note=_LOD_NOTE),
    KeyRule(rf"{_R}/FromRGB/weight", r"b\1.fromrgb.weight", transform=_conv),
    KeyRule(rf"{_R}/FromRGB/bias", r"b\1.fromrgb.bias"),
    KeyRule(rf"{_R}/Conv0/(weight)", r"b\1.conv0.\2", transform=_conv),
    KeyRule(rf"{_R}/Conv0/(bias)", r"b\1.conv0.\2"),
    KeyRule(rf"{_R}/Conv1_down/(weight)", r"b\1.conv1.\2", transform=_conv),
    KeyRule(rf"{_R}/Conv1_down/(bias)", r"b\1.conv1.\2"),
    KeyRule(rf"{_R}/Skip/weight", r"b\1.skip.weight", transform=_conv),
    KeyRule(r"LabelEmbed/weight", r"mapping.embed.weight", transform=_dense),
    KeyRule(r"LabelEmbed/bias", r"mapping.embed.bias"),
    KeyRule(r"Mapping(\d+)/weight", r"mapping.fc\1.weight", transform=_dense),
    KeyRule(r"Mapping(\d+)/bias", r"mapping.fc\1.bias"),
    KeyRule(r"4x4/Conv/weight", r"b4.conv.weight", transform=_conv),
    KeyRule(r"4x4/Conv/bias", r"b4.conv.bias"),
    KeyRule(r"4x4/Dense0/weight", r"b4.fc.weight", transform=_dense),
    KeyRule(r"4x4/Dense0/bias", r"b4.fc.bias"),
    KeyRule(r"Output/weight", r"b4.out.weight", transform=_dense),
    KeyRule(r"Output/bias", r"b4.out.bias"),
)


class _Kwargs:
    """Reads a TensorFlow network's ``static_kwargs`` and remembers which were read (to report the others)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = dict(kwargs)
        self.known: set[str] = set(_IGNORED_KWARGS)

    def __call__(self, name: str, default: Any = None, none: Any = None) -> Any:
        self.known.add(name)
        value = self.kwargs.get(name, default)
        return value if value is not None else none

    def check(self, what: str) -> None:
        unknown = sorted(set(self.kwargs) - self.known)
        if unknown:
            listed = ", ".join(f"{k}={self.kwargs[k]!r}" for k in unknown)
            raise ConversionError(
                f"The TensorFlow {what} was built with arguments styleforge does not support: {listed}. "
                "It may come from a modified fork of the official code."
            )


def _check_version(net: TFNetworkStub) -> None:
    if net.version < MIN_TF_VERSION:
        raise ConversionError(
            f"The TensorFlow network {net.name!r} has state version {net.version}; versions older than "
            f"{MIN_TF_VERSION} (pre-2019 TensorFlow code) are not supported."
        )


def _lod_renamed(variables: dict[str, np.ndarray], prefix: str, what: str, resolution: int) -> tuple[dict, bool]:
    """``ToRGB_lod{k}`` / ``FromRGB_lod{k}`` scopes renamed to ``{r}x{r}/ToRGB`` (they mean 'orig' networks)."""
    out: dict[str, np.ndarray] = {}
    found = False
    for name, value in variables.items():
        m = re.fullmatch(rf"({prefix}){what}_lod(\d+)/(.*)", name)
        if m:
            r = resolution // 2 ** int(m.group(2))
            out[f"{m.group(1)}{r}x{r}/{what}/{m.group(3)}"] = value
            found = True
        else:
            out[name] = value
    return out, found


def _renamed_noise(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``synthesis/noise{k}`` -> the layer it feeds: k = 0 is the 4x4 ``Conv``; 2 log2(r) - 5 / - 4 are ``Conv0_up``
    / ``Conv1`` of the ``{r}x{r}`` block."""
    out: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        m = re.fullmatch(r"synthesis/noise(\d+)", name)
        if m is None:
            out[name] = value
            continue
        k = int(m.group(1))
        if k == 0:
            out["synthesis/4x4/Conv/noise_const"] = value
        else:
            r = 2 ** ((k + 5) // 2)
            layer = "Conv0_up" if k % 2 == 1 else "Conv1"
            out[f"synthesis/{r}x{r}/{layer}/noise_const"] = value
    return out


def _tensors(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in variables.items()}


def tf_generator_kwargs(net: TFNetworkStub) -> dict[str, Any]:
    """The official PyTorch ``Generator`` constructor arguments equivalent to a TensorFlow generator.

    Defaults are those of the TensorFlow code (config F: 512-dimensional latents, ``fmap_base`` 16384, 8
    mapping layers, ``skip`` architecture).
    """
    kw = _Kwargs(net.static_kwargs)
    out = {
        "z_dim": kw("latent_size", 512),
        "c_dim": kw("label_size", 0),
        "w_dim": kw("dlatent_size", 512),
        "img_resolution": kw("resolution", 1024),
        "img_channels": kw("num_channels", 3),
        "mapping_kwargs": {
            "num_layers": kw("mapping_layers", 8),
            "embed_features": kw("label_fmaps", None),
            "layer_features": kw("mapping_fmaps", None),
            "activation": kw("mapping_nonlinearity", "lrelu"),
            "lr_multiplier": kw("mapping_lrmul", 0.01),
            "w_avg_beta": kw("w_avg_beta", 0.995, none=1),
        },
        "channel_base": kw("fmap_base", 16384) * FMAP_BASE_FACTOR,
        "channel_max": kw("fmap_max", 512),
        "num_fp16_res": kw("num_fp16_res", 0),
        "conv_clamp": kw("conv_clamp", None),
        "architecture": kw("architecture", "skip"),
        "resample_filter": list(kw("resample_kernel", [1, 3, 3, 1])),
        "use_noise": kw("use_noise", True),
        "activation": kw("nonlinearity", "lrelu"),
    }
    kw.check("generator")
    return out


def tf_discriminator_kwargs(net: TFNetworkStub) -> dict[str, Any]:
    """The official PyTorch ``Discriminator`` constructor arguments equivalent to a TensorFlow discriminator."""
    kw = _Kwargs(net.static_kwargs)
    out = {
        "c_dim": kw("label_size", 0),
        "img_resolution": kw("resolution", 1024),
        "img_channels": kw("num_channels", 3),
        "architecture": kw("architecture", "resnet"),
        "channel_base": kw("fmap_base", 16384) * FMAP_BASE_FACTOR,
        "channel_max": kw("fmap_max", 512),
        "num_fp16_res": kw("num_fp16_res", 0),
        "conv_clamp": kw("conv_clamp", None),
        "cmap_dim": kw("mapping_fmaps", None),
        "block_kwargs": {
            "activation": kw("nonlinearity", "lrelu"),
            "resample_filter": list(kw("resample_kernel", [1, 3, 3, 1])),
            "freeze_layers": kw("freeze_layers", 0),
        },
        "mapping_kwargs": {
            "num_layers": kw("mapping_layers", 0),
            "layer_features": kw("mapping_fmaps", None),
            "activation": kw("nonlinearity", "lrelu"),
            "lr_multiplier": kw("mapping_lrmul", 0.1),
        },
        "epilogue_kwargs": {
            "mbstd_group_size": kw("mbstd_group_size", None),
            "mbstd_num_channels": kw("mbstd_num_features", 1),
            "activation": kw("nonlinearity", "lrelu"),
        },
    }
    kw.check("discriminator")
    if out["c_dim"] == 0:
        del out["mapping_kwargs"]["num_layers"]  # an unconditional D builds no label mapping
    return out


def is_tf_generator(obj: Any) -> bool:
    """A TensorFlow StyleGAN2 generator: ``dlatent_avg`` plus ``mapping`` and ``synthesis`` components whose
    synthesis holds the learned 4x4 constant."""
    if not isinstance(obj, TFNetworkStub) or "synthesis" not in obj.components or "mapping" not in obj.components:
        return False
    names = obj.collect_variables()
    return "dlatent_avg" in names and "synthesis/4x4/Const/const" in names


def is_tf_discriminator(obj: Any) -> bool:
    """A TensorFlow StyleGAN2 discriminator: an epilogue ``4x4/Conv``, ``4x4/Dense0`` and ``Output``."""
    if not isinstance(obj, TFNetworkStub) or obj.components:
        return False
    names = {name for name, _ in obj.variables}
    return {"4x4/Conv/weight", "4x4/Dense0/weight", "Output/weight"} <= names


def convert_tf_generator(obj: TFNetworkStub) -> Network:
    """Our :class:`StyleGAN2Generator` holding the weights of the TensorFlow generator ``obj`` (``G`` or ``Gs``)."""
    from styleforge.convert.official_stylegan2 import generator_config
    from styleforge.models.stylegan2 import StyleGAN2Generator

    _check_version(obj)
    kwargs = tf_generator_kwargs(obj)
    variables, orig = _lod_renamed(obj.collect_variables(), "synthesis/", "ToRGB", kwargs["img_resolution"])
    if orig:
        kwargs["architecture"] = "orig"
    net = StyleGAN2Generator(generator_config(kwargs))
    remap_state_dict(_tensors(_renamed_noise(variables)), TF_GENERATOR_RULES, net,
                     what=f"TensorFlow StyleGAN2 generator {obj.name!r}")
    return net


def convert_tf_discriminator(obj: TFNetworkStub) -> Network:
    """Our :class:`StyleGAN2Discriminator` holding the weights of the TensorFlow discriminator ``obj``."""
    from styleforge.convert.official_stylegan2 import discriminator_config
    from styleforge.models.stylegan2 import StyleGAN2Discriminator

    _check_version(obj)
    kwargs = tf_discriminator_kwargs(obj)
    variables, orig = _lod_renamed(obj.collect_variables(), "", "FromRGB", kwargs["img_resolution"])
    if orig:
        kwargs["architecture"] = "orig"
    net = StyleGAN2Discriminator(discriminator_config(kwargs))
    remap_state_dict(_tensors(variables), TF_DISCRIMINATOR_RULES, net,
                     what=f"TensorFlow StyleGAN2 discriminator {obj.name!r}")
    return net


#: the converters below read TensorFlow network stubs (see :func:`styleforge.convert.official.converters`)
STUB_TYPE = TFNetworkStub

CONVERTERS = [
    (is_tf_generator, convert_tf_generator),
    (is_tf_discriminator, convert_tf_discriminator),
]
