"""Convert official StyleGAN3 generators (T, R) to :class:`~styleforge.models.stylegan3.StyleGAN3Generator`.

Recognition uses the stored structure, not the class name: a ``synthesis`` whose ``input`` holds the Fourier
``freqs`` and ``phases`` buffers, layers named ``L<i>_<size>_<channels>``, and a plain StyleGAN3 mapping
network (``fc<i>`` layers, an optional linear ``embed``, a 1-D ``w_avg``). StyleGAN-XL generators (an
``embed_proj`` in the mapping, per-class ``w_avg``, extra constructor options) are left to
``official_stylegan_xl``. The discriminator of a StyleGAN3 snapshot is a StyleGAN2 discriminator and is
converted by ``official_stylegan2``.

The official layer ``synthesis.L<i>_<size>_<ch>`` becomes ``synthesis.layers.<i>``; its ``up_filter`` and
``down_filter`` buffers are derived from the configuration in styleforge, so the converter only *checks* them
against the values it designs itself (a mismatch means the layer schedule differs).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from styleforge.convert.official import ConversionError, KeyRule, remap_state_dict
from styleforge.convert.safe_pickle import ModuleStub, PersistentObject
from styleforge.models.stylegan3 import StyleGAN3Config, StyleGAN3Generator

__all__ = [
    "CONVERTERS",
    "can_convert_generator",
    "convert_generator",
    "stylegan3_config_from_kwargs",
    "synthesis_key_rules",
    "mapping_key_rules",
    "check_layer_schedule",
    "has_stylegan3_synthesis",
    "plain_number",
    "stored_kwargs",
]

_LAYER_NAME = re.compile(r"L(\d+)_(\d+)_(\d+)")

# Official constructor keyword -> StyleGAN3Config field.
_TOP_KWARGS = {
    "z_dim": "z_dim",
    "c_dim": "c_dim",
    "w_dim": "w_dim",
    "img_resolution": "img_resolution",
    "img_channels": "img_channels",
}
_SYNTHESIS_KWARGS = {
    name: name
    for name in (
        "channel_base",
        "channel_max",
        "num_layers",
        "num_critical",
        "first_cutoff",
        "first_stopband",
        "last_stopband_rel",
        "margin_size",
        "output_scale",
        "num_fp16_res",
        "conv_kernel",
        "filter_size",
        "lrelu_upsampling",
        "use_radial_filters",
        "conv_clamp",
        "magnitude_ema_beta",
    )
}
_MAPPING_KWARGS = {
    "num_layers": "mapping_layers",
    "lr_multiplier": "mapping_lr_multiplier",
    "w_avg_beta": "w_avg_beta",
}
# Per-layer attributes compared against the network we build (catches forks with a different schedule).
_CHECKED_LAYER_ATTRS = (
    "in_channels",
    "out_channels",
    "in_sampling_rate",
    "out_sampling_rate",
    "up_factor",
    "down_factor",
    "up_taps",
    "down_taps",
    "conv_kernel",
    "is_torgb",
    "is_critically_sampled",
)
_FLOAT_LAYER_ATTRS = ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width")
_ATTR_RTOL = 1e-9


def plain_number(value: Any) -> Any:
    """numpy scalars -> Python numbers (constructor kwargs pickled with numpy types)."""
    return value.item() if hasattr(value, "item") and getattr(value, "size", 1) == 1 else value


def stored_kwargs(obj: ModuleStub) -> dict[str, Any]:
    """The constructor kwargs of a persistent object (empty for a plain module stub)."""
    return dict(obj.init_kwargs) if isinstance(obj, PersistentObject) else {}


def _is_mapping_sg3(mapping: ModuleStub) -> bool:
    children = mapping.children
    if any(not (name == "embed" or re.fullmatch(r"fc\d+", name)) for name in children):
        return False  # e.g. StyleGAN-XL's embed_proj
    embed = children.get("embed")
    if embed is not None and "weight" not in embed.parameters_dict:
        return False
    if embed is not None and embed.class_name != "FullyConnectedLayer":
        return False
    w_avg = mapping.buffers_dict.get("w_avg")
    return w_avg is not None and w_avg.ndim == 1


def has_stylegan3_synthesis(obj: ModuleStub) -> bool:
    """``obj`` has a mapping network and a StyleGAN3-type synthesis network: a Fourier-feature input (buffers
    ``freqs``, ``phases``, ``transform``) followed by layers named ``L<i>_<size>_<channels>``. StyleGAN3 and
    StyleGAN-XL generators both do; their mapping networks tell them apart."""
    try:
        synthesis = obj.get_submodule("synthesis")
        obj.get_submodule("mapping")
        inp = synthesis.get_submodule("input")
    except KeyError:
        return False
    if not {"freqs", "phases", "transform"} <= set(inp.buffers_dict):
        return False
    layer_names = [n for n in synthesis.children if n != "input"]
    return bool(layer_names) and all(_LAYER_NAME.fullmatch(n) for n in layer_names)


def can_convert_generator(obj: ModuleStub) -> bool:
    """True for an official StyleGAN3 generator (judged from its stored structure and constructor kwargs)."""
    if not has_stylegan3_synthesis(obj):
        return False
    mapping = obj.get_submodule("mapping")
    if not _is_mapping_sg3(mapping):
        return False
    kwargs = stored_kwargs(obj)
    known = set(_TOP_KWARGS) | set(_SYNTHESIS_KWARGS) | {"mapping_kwargs"}
    if set(kwargs) - known:
        return False  # e.g. StyleGAN-XL options; let another converter try
    return set(kwargs.get("mapping_kwargs") or {}) <= set(_MAPPING_KWARGS)


def stylegan3_config_from_kwargs(kwargs: dict[str, Any]) -> StyleGAN3Config:
    """The :class:`StyleGAN3Config` of an official ``Generator(**kwargs)``; unknown keywords are an error."""
    fields: dict[str, Any] = {}
    unknown = []
    for key, value in kwargs.items():
        if key == "mapping_kwargs":
            for mkey, mvalue in (value or {}).items():
                if mkey not in _MAPPING_KWARGS:
                    unknown.append(f"mapping_kwargs.{mkey}")
                else:
                    fields[_MAPPING_KWARGS[mkey]] = plain_number(mvalue)
        elif key in _TOP_KWARGS:
            fields[_TOP_KWARGS[key]] = int(plain_number(value))
        elif key in _SYNTHESIS_KWARGS:
            fields[_SYNTHESIS_KWARGS[key]] = plain_number(value)
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"Cannot convert the official StyleGAN3 generator: unsupported constructor argument(s) {unknown}."
        )
    if fields.get("conv_clamp") is not None:
        fields["conv_clamp"] = float(fields["conv_clamp"])
    return StyleGAN3Config(**fields)


def mapping_key_rules(prefix: str = "mapping.") -> list[KeyRule]:
    """Rows of the conversion table for the mapping network (names are shared with ours)."""
    p = re.escape(prefix)
    return [
        KeyRule(p + r"(fc\d+)\.(weight|bias)", prefix + r"\1.\2"),
        KeyRule(p + r"embed\.(weight|bias)", prefix + r"embed.\1"),
        KeyRule(p + r"w_avg", prefix + "w_avg"),
    ]


def synthesis_key_rules(official_layer_names: list[str], prefix: str = "synthesis.") -> list[KeyRule]:
    """Rows of the conversion table for a StyleGAN3 synthesis network.

    Args:
        official_layer_names: the official layer names in order (``["L0_36_512", ...]``); entry ``i`` becomes
            ``synthesis.layers.<i>``.
        prefix: where the synthesis network sits (also used by StyleGAN-XL, whose synthesis is the same).
    """
    p = re.escape(prefix)
    rules = [
        KeyRule(p + r"input\.(weight|freqs|phases|transform)", prefix + r"input.\1"),
        KeyRule(p + r"input\.affine\.(weight|bias)", prefix + r"input.affine.\1"),
    ]
    for idx, name in enumerate(official_layer_names):
        ours = f"{prefix}layers.{idx}."
        src = p + re.escape(name) + r"\."
        rules += [
            KeyRule(src + r"(weight|bias|magnitude_ema)", ours + r"\1"),
            KeyRule(src + r"affine\.(weight|bias)", ours + r"affine.\1"),
            KeyRule(
                src + r"(up_filter|down_filter)",
                ours + r"\1",
                action="check",
                note="designed from the config in styleforge; must equal the stored filter",
            ),
        ]
    return rules


def check_layer_schedule(net: StyleGAN3Generator, synthesis: ModuleStub, names: list[str]) -> None:
    """Compare the stored per-layer hyperparameters with those of the network built from the kwargs.

    Args:
        net: the freshly built styleforge generator (its ``synthesis`` is compared).
        synthesis: the official ``SynthesisNetwork`` stub.
        names: the official layer names in layer order.

    Raises:
        ConversionError: listing every layer attribute (sizes, channels, sampling rates, cutoffs, padding,
            which filters exist) that differs.
    """
    ours = net.synthesis
    if len(names) != len(ours.layers):
        raise ConversionError(
            f"Cannot convert the official StyleGAN3 generator: it has {len(names)} synthesis layers, the "
            f"configuration gives {len(ours.layers)}."
        )
    problems = []
    for idx, name in enumerate(names):
        if ours.official_layer_name(idx) != name:
            problems.append(f"layer {idx} is {name}, expected {ours.official_layer_name(idx)}")
            continue
        stub, layer = synthesis.get_submodule(name), ours.layers[idx]
        for attr in _CHECKED_LAYER_ATTRS:
            stored = stub.attr(attr)
            if stored is not None and plain_number(stored) != getattr(layer, attr):
                problems.append(f"{name}.{attr} = {plain_number(stored)} vs {getattr(layer, attr)}")
        for attr in _FLOAT_LAYER_ATTRS:
            stored = stub.attr(attr)
            if stored is not None and not math.isclose(
                float(stored), getattr(layer, attr), rel_tol=_ATTR_RTOL
            ):
                problems.append(f"{name}.{attr} = {float(stored)} vs {getattr(layer, attr)}")
        stored_pad = stub.attr("padding")
        if stored_pad is not None and tuple(int(v) for v in stored_pad) != tuple(layer.padding):
            problems.append(f"{name}.padding = {list(stored_pad)} vs {list(layer.padding)}")
        # A 1-tap filter is None (no filtering); stored values are compared by the "check" rules.
        for buf in ("up_filter", "down_filter"):
            stored = (stub.state.get("_buffers") or {}).get(buf)
            if (stored is None) != (getattr(layer, buf) is None):
                problems.append(f"{name}.{buf} is {'absent' if stored is None else 'present'} in the pickle")
    if problems:
        raise ConversionError(
            "Cannot convert the official StyleGAN3 generator: its layer schedule differs from the one its "
            "constructor arguments give: " + "; ".join(problems[:12])
        )


def convert_generator(obj: ModuleStub) -> StyleGAN3Generator:
    """Build a :class:`StyleGAN3Generator` from an official ``Generator`` stub and load its weights."""
    config = stylegan3_config_from_kwargs(stored_kwargs(obj))
    net = StyleGAN3Generator(config)
    synthesis = obj.get_submodule("synthesis")
    names = sorted(
        (n for n in synthesis.children if n != "input"), key=lambda n: int(_LAYER_NAME.fullmatch(n)[1])
    )
    check_layer_schedule(net, synthesis, names)
    rules = mapping_key_rules() + synthesis_key_rules(names)
    remap_state_dict(obj.state_dict(), rules, net, what="StyleGAN3 generator")
    return net.eval()



def _convert_checked(obj: ModuleStub) -> StyleGAN3Generator:
    with torch.no_grad():
        return convert_generator(obj)


CONVERTERS = [(can_convert_generator, _convert_checked)]
