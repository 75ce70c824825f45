"""Convert official StyleGAN-XL generators (stem and super-resolution stages) to
:class:`~styleforge.models.stylegan_xl.StyleGANXLGenerator`.

StyleGAN-XL snapshots are written with ``dill`` and hold a plain ``torch.nn.Embedding`` (the class embedding
table, ``mapping.embed``); the safe unpickler turns it into a module stub. Recognition uses the stored
structure: a StyleGAN3-style ``synthesis`` (Fourier ``input`` with ``freqs``/``phases``/``transform`` buffers,
layers named ``L<k>_<size>_<channels>``) and a mapping network that holds an ``nn.Embedding`` ``embed``
(conditional networks also have ``embed_proj`` and a per-class ``w_avg [c_dim, w_dim]``).

Configuration sources, in the official construction order:

- the stem synthesis settings come from the ``synthesis`` object's own constructor arguments (a
  super-resolution generator reuses its stem's synthesis object, so its own constructor arguments do not
  describe the stem); official defaults fill what is absent;
- the mapping settings from the ``mapping`` object's constructor arguments and the embedding table's shape;
- the super-resolution stages from the stored layers (``layer_names`` gives their order): after the stem's
  kept layers, a stage begins with a layer whose input and output share cutoff, sampling rate, channels and
  size (index 0 of the stage schedule). The last stage's ``head_layers`` and ``up_factor`` are the generator's
  constructor arguments; an earlier stage kept ``head_layers - num_critical`` of its layers, and its
  resolution follows from the geometric growth of its layers' cutoffs (or from ``up_factor`` for the stage
  before the last).

Weights are moved with the StyleGAN3 conversion table (``synthesis.L<k>_...`` -> ``synthesis.layers.<i>``)
plus the XL mapping rows, and every layer's stored hyperparameters are compared with the network built here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from styleforge.convert.official import ConversionError, KeyRule, remap_state_dict
from styleforge.convert.official_stylegan3 import (
    check_layer_schedule,
    has_stylegan3_synthesis,
    mapping_key_rules,
    plain_number,
    stored_kwargs,
    synthesis_key_rules,
)
from styleforge.convert.safe_pickle import ModuleStub, PersistentObject
from styleforge.models.stylegan_xl import SUPERRES_SCHEDULE_CRITICAL, StyleGANXLConfig, StyleGANXLGenerator

__all__ = ["CONVERTERS", "can_convert_generator", "convert_generator", "stylegan_xl_config_from_stub"]

_LAYER_NAME = re.compile(r"L(\d+)_(\d+)_(\d+)")

#: official SynthesisNetwork / SynthesisLayer constructor defaults (used where a pickle omits an argument)
_SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2.0,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "num_fp16_res": 4,
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
    "magnitude_ema_beta": 0.999,
}
#: official MappingNetwork keyword -> (StyleGANXLConfig field, official default)
_MAPPING_FIELDS: dict[str, tuple[str, Any]] = {
    "num_layers": ("mapping_layers", 2),
    "lr_multiplier": ("mapping_lr_multiplier", 0.01),
    "w_avg_beta": ("w_avg_beta", 0.998),
}
#: mapping keywords that only affect initialisation
_MAPPING_IGNORED = {"rand_embedding"}
#: keywords every official network sets on itself (read from other places or redundant)
_SYNTHESIS_STRUCTURAL = {"w_dim", "img_resolution", "img_channels"}
_MAPPING_STRUCTURAL = {"z_dim", "c_dim", "w_dim", "num_ws"}
_ROUNDING_TOLERANCE = 1e-3


def _fail(msg: str) -> ConversionError:
    return ConversionError(f"Cannot convert the official StyleGAN-XL generator: {msg}")


def can_convert_generator(obj: ModuleStub) -> bool:
    """True for an official StyleGAN-XL generator (stem or super-res), judged from its stored structure."""
    if not has_stylegan3_synthesis(obj):
        return False
    embed = obj.get_submodule("mapping").children.get("embed")
    return embed is not None and _is_embedding(embed)


def _is_embedding(stub: ModuleStub) -> bool:
    """A pickled plain ``torch.nn.Embedding``: an ordinary module stub with its table and sizes."""
    if isinstance(stub, PersistentObject) or "weight" not in stub.parameters_dict:
        return False
    table = stub.parameters_dict["weight"]
    return (
        table.ndim == 2
        and stub.attr("num_embeddings") == table.shape[0]
        and (stub.attr("embedding_dim") == table.shape[1])
    )


def _layer_names(synthesis: ModuleStub) -> list[str]:
    """The layer names in execution order: the stored ``layer_names``, checked against the sub-modules."""
    children = [n for n in synthesis.children if n != "input"]
    stored = synthesis.attr("layer_names")
    names = (
        [str(n) for n in stored]
        if isinstance(stored, (list, tuple))
        else sorted(children, key=lambda n: int(_LAYER_NAME.fullmatch(n).group(1)))
    )
    if sorted(names) != sorted(children):
        raise _fail(f"layer_names {names} do not match the synthesis sub-modules {children}.")
    return names


def _synthesis_fields(synthesis: ModuleStub) -> dict[str, Any]:
    kwargs = stored_kwargs(synthesis)
    unknown = set(kwargs) - set(_SYNTHESIS_DEFAULTS) - _SYNTHESIS_STRUCTURAL
    if unknown:
        raise _fail(f"unsupported synthesis constructor argument(s) {sorted(unknown)}.")
    fields = {k: plain_number(kwargs.get(k, default)) for k, default in _SYNTHESIS_DEFAULTS.items()}
    if fields["conv_clamp"] is not None:
        fields["conv_clamp"] = float(fields["conv_clamp"])
    for key in ("img_resolution", "img_channels", "w_dim"):
        value = kwargs.get(key, synthesis.attr(key))
        if value is None:
            raise _fail(f"the synthesis network does not record {key}.")
        fields[key] = int(plain_number(value))
    return fields


def _mapping_fields(mapping: ModuleStub) -> dict[str, Any]:
    kwargs = stored_kwargs(mapping)
    unknown = set(kwargs) - set(_MAPPING_FIELDS) - _MAPPING_IGNORED - _MAPPING_STRUCTURAL
    if unknown:
        raise _fail(f"unsupported mapping constructor argument(s) {sorted(unknown)}.")
    fields = {field: plain_number(kwargs.get(key, default)) for key, (field, default) in _MAPPING_FIELDS.items()}
    for key in ("z_dim", "c_dim"):
        value = kwargs.get(key, mapping.attr(key))
        if value is None:
            raise _fail(f"the mapping network does not record {key}.")
        fields[key] = int(plain_number(value))
    table = mapping.get_submodule("embed").parameters_dict["weight"]
    rows, fields["embed_dim"] = int(table.shape[0]), int(table.shape[1])
    # The table matters only for conditional networks; None means "one row per class".
    fields["num_embeddings"] = None if fields["c_dim"] in (0, rows) else rows
    return fields


def _starts_stage(stub: ModuleStub) -> bool:
    """The first layer of a stage keeps cutoff, sampling rate and size (schedule index 0 on both sides).

    Inside a stage the cutoff grows from layer to layer until the critically sampled layers, and those change
    the size; only ToRGB also keeps all three, so it is excluded.
    """
    same = all(
        plain_number(stub.attr(f"in_{k}")) == plain_number(stub.attr(f"out_{k}"))
        for k in ("cutoff", "sampling_rate", "channels")
    )
    size_in, size_out = stub.attr("in_size"), stub.attr("out_size")
    same_size = size_in is not None and list(map(int, np.ravel(size_in))) == list(
        map(int, np.ravel(size_out))
    )
    return same and same_size and not bool(stub.attr("is_torgb"))


def _stage_runs(names: list[str], synthesis: ModuleStub, stem_kept: int) -> list[list[str]]:
    """The layers after the stem's kept ones, split into stages (each starts where :func:`_starts_stage`)."""
    indices = [int(_LAYER_NAME.fullmatch(n).group(1)) for n in names]
    if indices[:stem_kept] != list(range(stem_kept)):
        raise _fail(f"the layers do not start with the stem's L0..L{stem_kept - 1}: {names[:stem_kept]}.")
    runs: list[list[str]] = []
    for name in names[stem_kept:]:
        if _starts_stage(synthesis.get_submodule(name)):
            runs.append([name])
        elif runs:
            runs[-1].append(name)
        else:
            raise _fail(f"{name} should begin the first super-resolution stage but does not look like it.")
    return runs


def _stage_resolution(stubs: list[ModuleStub], head_layers: int) -> int | None:
    """Resolution of an earlier stage from its first two layers' cutoffs (``None`` if one layer is left)."""
    if len(stubs) < 2:
        return None
    first = float(plain_number(stubs[0].attr("out_cutoff")))
    second = float(plain_number(stubs[1].attr("out_cutoff")))
    last_cutoff = first * (second / first) ** (head_layers - SUPERRES_SCHEDULE_CRITICAL)
    resolution = 2 * last_cutoff
    rounded = 2 ** round(math.log2(resolution))
    if abs(resolution - rounded) > _ROUNDING_TOLERANCE * rounded:
        raise _fail(f"cannot infer the resolution of a super-resolution stage (cutoffs give {resolution:g}).")
    return int(rounded)


def stylegan_xl_config_from_stub(obj: ModuleStub) -> StyleGANXLConfig:
    """The :class:`StyleGANXLConfig` of an official StyleGAN-XL generator stub (stem or super-resolution)."""
    synthesis = obj.get_submodule("synthesis")
    mapping = obj.get_submodule("mapping")
    fields = {**_synthesis_fields(synthesis), **_mapping_fields(mapping)}
    names = _layer_names(synthesis)
    stem_layers, num_critical = fields["num_layers"], fields["num_critical"]
    if len(names) == stem_layers + 1:  # a stem
        return StyleGANXLConfig(**fields)

    # A super-resolution generator: stages from the layer numbering.
    kwargs = stored_kwargs(obj)
    runs = _stage_runs(names, synthesis, stem_layers - num_critical)
    if not runs:
        raise _fail(f"{len(names)} layers, but the stem alone has {stem_layers + 1}.")
    heads = [len(run) + num_critical for run in runs[:-1]] + [len(runs[-1]) - 1]
    if "head_layers" in kwargs and int(plain_number(kwargs["head_layers"])) != heads[-1]:
        raise _fail(f"head_layers={kwargs['head_layers']} but the last stage has {len(runs[-1])} layers.")
    final_res = int(plain_number(kwargs.get("img_resolution", obj.attr("img_resolution"))))
    resolutions: list[int | None] = [
        _stage_resolution([synthesis.get_submodule(name) for name in run], h)
        for run, h in zip(runs[:-1], heads[:-1], strict=True)
    ] + [final_res]
    stem_res = fields["img_resolution"]
    if "up_factor" in kwargs and len(resolutions) >= 2:  # the stage before the last one, from up_factor
        before_last = final_res // int(plain_number(kwargs["up_factor"]))
        if resolutions[-2] not in (None, before_last):
            raise _fail(
                f"the layers give {resolutions[-2]} px before the last stage, up_factor gives {before_last}."
            )
        resolutions[-2] = before_last
    if None in resolutions:
        raise _fail("cannot infer the resolution of a super-resolution stage with a single kept layer.")
    chain = [stem_res, *resolutions]
    ups = [b // a for a, b in zip(chain[:-1], chain[1:], strict=True)]
    if any(a * u != b for a, u, b in zip(chain[:-1], ups, chain[1:], strict=True)):
        raise _fail(f"stage resolutions {chain} are not integer multiples of each other.")
    if "up_factor" in kwargs and int(plain_number(kwargs["up_factor"])) != ups[-1]:
        raise _fail(
            f"up_factor={kwargs['up_factor']} but the last stage goes from {chain[-2]} to {chain[-1]} px."
        )
    fields["img_resolution"] = final_res
    return StyleGANXLConfig(**fields, superres_head_layers=tuple(heads), superres_up_factors=tuple(ups))


def xl_mapping_key_rules(conditional: bool, prefix: str = "mapping.") -> list[KeyRule]:
    """Conversion rows of the XL mapping: the StyleGAN3 rows plus ``embed_proj`` (and the unused table)."""
    p = re.escape(prefix)
    rules = [KeyRule(p + r"embed_proj\.(weight|bias)", prefix + r"embed_proj.\1")]
    if not conditional:
        rules.append(
            KeyRule(
                p + r"embed\.weight",
                action="drop",
                note="the official mapping loads the class table even when c_dim == 0; it is unused",
            )
        )
    return rules + mapping_key_rules(prefix)


def convert_generator(obj: ModuleStub) -> StyleGANXLGenerator:
    """Build a :class:`StyleGANXLGenerator` from an official StyleGAN-XL generator stub, with its weights."""
    config = stylegan_xl_config_from_stub(obj)
    net = StyleGANXLGenerator(config)
    synthesis = obj.get_submodule("synthesis")
    names = _layer_names(synthesis)
    ours = [net.synthesis.official_layer_name(i) for i in range(len(net.synthesis.layers))]
    if ours != names:
        raise _fail(
            f"the configuration inferred from the pickle gives layers {ours}, the pickle has {names}."
        )
    check_layer_schedule(net, synthesis, names)
    rules = xl_mapping_key_rules(config.c_dim > 0) + synthesis_key_rules(names)
    remap_state_dict(dict(obj.state_dict()), rules, net, what="StyleGAN-XL generator")
    for idx, name in enumerate(names):
        stub = synthesis.get_submodule(name)
        for buf in ("up_filter", "down_filter"):
            stored = (stub.state.get("_buffers") or {}).get(buf)
            if (stored is None) != (getattr(net.synthesis.layers[idx], buf) is None):
                raise _fail(f"{name}.{buf} is present in only one of the two networks.")
    net.eval()
    return net


def _convert_checked(obj: ModuleStub) -> StyleGANXLGenerator:
    with torch.no_grad():
        return convert_generator(obj)


CONVERTERS = [(can_convert_generator, _convert_checked)]
