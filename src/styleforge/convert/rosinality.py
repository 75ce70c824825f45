"""rosinality/stylegan2-pytorch checkpoints <-> styleforge StyleGAN2 networks, both directions.

That project's training script saves ``{"g": ..., "d": ..., "g_ema": ..., "g_optim": ..., "d_optim": ..., "args":
argparse.Namespace(size, latent, n_mlp, channel_multiplier, ...)}`` with ``torch.save``. We read it with
``torch.load(weights_only=True)``, allowing ``argparse.Namespace`` and nothing else beyond tensors, so nothing in
the file runs.

Its networks compute the same functions as NVIDIA's StyleGAN2 (config F, ``skip`` generator, ``resnet``
discriminator) under other names and layouts:

- channels: ``512`` up to 32 px, then ``256, 128, 64, 32, 16`` times ``channel_multiplier`` at 64 ... 1024 px,
  i.e. our ``channel_base = 16384 * channel_multiplier`` with ``channel_max = 512``;
- generator: ``style.{i}`` (after a pixel norm) is ``mapping.fc{i-1}``; ``input.input`` the 4x4 constant;
  ``conv1`` / ``to_rgb1`` the 4x4 block; ``convs.{2k}``, ``convs.{2k+1}`` and ``to_rgbs.{k}`` the ``conv0``,
  ``conv1`` and ``torgb`` of the block at ``8 * 2**k`` px; modulated weights carry a leading batch axis of 1;
  the activation's bias (``activate.bias``) is the layer bias; ``noise.weight`` the noise strength; the
  stored noise buffers ``noises.noise_{j}`` our ``noise_const`` in layer order;
- discriminator: ``convs.0`` is ``fromrgb`` of the top block, ``convs.{k}`` the residual block at
  ``R / 2**(k-1)`` px (``conv1``, ``conv2`` (down), ``skip``), ``final_conv`` / ``final_linear.{0,1}`` the 4x4
  epilogue ``conv`` / ``fc`` / ``out``;
- blur kernels are stored there (normalised ``[1, 3, 3, 1]`` outer product, times 4 where they follow an
  up-sampling); we derive them from the config and only check them, unless a generator's stored kernels differ,
  in which case it is built with ``stored_filters=True`` and keeps each layer's kernel with its weights (a
  discriminator's kernels must be the standard ones).

rosinality's generator keeps no average of w (its truncation takes a ``mean_latent`` computed on the fly), so a
converted generator gets ``w_avg`` = the mean of w over :data:`W_AVG_SAMPLES` latents of a fixed seed, as that
project's ``mean_latent`` computes it (or the checkpoint's ``latent_avg`` when one is stored).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from styleforge.convert.official import ConversionError, KeyRule, remap_state_dict
from styleforge.models.base import Network
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write_bytes

__all__ = [
    "GENERATOR_RULES",
    "DISCRIMINATOR_RULES",
    "W_AVG_SAMPLES",
    "W_AVG_SEED",
    "is_rosinality_checkpoint",
    "read_checkpoint",
    "load_rosinality",
    "generator_to_rosinality",
    "discriminator_to_rosinality",
    "save_rosinality",
]

#: channels of rosinality's networks at 64 px and above, before ``channel_multiplier``
_ROS_CHANNEL_BASE = 16384
#: rosinality's widest layers (every layer up to 32 px)
_ROS_CHANNEL_MAX = 512
#: its default ``channel_multiplier`` (config F)
DEFAULT_CHANNEL_MULTIPLIER = 2
#: latents averaged for ``w_avg`` (that project's ``mean_latent(4096)``), drawn from a fixed seed
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
#: the blur kernels that follow a 2x up-sampling are stored times up**2
_UP_GAIN = 4.0
#: its blur kernel (``make_kernel([1, 3, 3, 1])``: normalised outer product)
_STANDARD_KERNEL = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
#: its minibatch-stddev settings (fixed in its code)
_MBSTD_GROUP, _MBSTD_CHANNELS = 4, 1
_NETWORK_KEYS = ("g_ema", "g", "d")


def _squeeze0(t: torch.Tensor) -> torch.Tensor:
    return t[0]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _noise(t: torch.Tensor) -> torch.Tensor:
    return t[0, 0]


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(())


def _up_kernel(t: torch.Tensor) -> torch.Tensor:
    return t / _UP_GAIN


_FILTER_NOTE = "blur kernel; derived from the config here, must equal the stored one"

#: rosinality generator keys, after :func:`_block_names` put the block resolution into them
GENERATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"style\.(\d+)\.(weight|bias)", r"mapping.fc\1.\2"),  # indices already shifted by _block_names
    KeyRule(r"input\.input", r"synthesis.b4.const", transform=_squeeze0),
    KeyRule(r"b(\d+)\.(conv0|conv1)\.conv\.weight", r"synthesis.b\1.\2.weight", transform=_squeeze0),
    KeyRule(r"b(\d+)\.(conv0|conv1)\.conv\.modulation\.(weight|bias)", r"synthesis.b\1.\2.affine.\3"),
    KeyRule(r"b(\d+)\.(conv0|conv1)\.noise\.weight", r"synthesis.b\1.\2.noise_strength", transform=_scalar),
    KeyRule(r"b(\d+)\.(conv0|conv1)\.activate\.bias", r"synthesis.b\1.\2.bias"),
    KeyRule(r"b(\d+)\.(conv0|conv1)\.noise_const", r"synthesis.b\1.\2.noise_const", transform=_noise),
    KeyRule(r"b(\d+)\.torgb\.conv\.weight", r"synthesis.b\1.torgb.weight", transform=_squeeze0),
    KeyRule(r"b(\d+)\.torgb\.conv\.modulation\.(weight|bias)", r"synthesis.b\1.torgb.affine.\2"),
    KeyRule(r"b(\d+)\.torgb\.bias", r"synthesis.b\1.torgb.bias", transform=_flat),
    KeyRule(r"latent_avg", r"mapping.w_avg"),
)



def _g_kernel_rules(action: str) -> tuple[KeyRule, ...]:
    """The generator's blur kernels: ``"check"``ed against the config, or ``"load"``ed (``stored_filters``)."""
    return (
        KeyRule(r"b(\d+)\.conv0\.conv\.blur\.kernel", r"synthesis.b\1.conv0.resample_filter", action,
                transform=_up_kernel, note=_FILTER_NOTE),
        KeyRule(r"b(\d+)\.torgb\.upsample\.kernel", r"synthesis.b\1.resample_filter", action, transform=_up_kernel,
                note=_FILTER_NOTE),
    )


#: rosinality discriminator keys, after :func:`_block_names`
DISCRIMINATOR_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"b(\d+)\.fromrgb\.0\.weight", r"b\1.fromrgb.weight"),
    KeyRule(r"b(\d+)\.fromrgb\.1\.bias", r"b\1.fromrgb.bias"),
    KeyRule(r"b(\d+)\.conv0\.0\.weight", r"b\1.conv0.weight"),
    KeyRule(r"b(\d+)\.conv0\.1\.bias", r"b\1.conv0.bias"),
    KeyRule(r"b(\d+)\.conv1\.0\.kernel", r"b\1.conv1.resample_filter", "check", note=_FILTER_NOTE),
    KeyRule(r"b(\d+)\.conv1\.1\.weight", r"b\1.conv1.weight"),
    KeyRule(r"b(\d+)\.conv1\.2\.bias", r"b\1.conv1.bias"),
    KeyRule(r"b(\d+)\.skip\.0\.kernel", r"b\1.skip.resample_filter", "check", note=_FILTER_NOTE),
    KeyRule(r"b(\d+)\.skip\.1\.weight", r"b\1.skip.weight"),
    KeyRule(r"final_conv\.0\.weight", r"b4.conv.weight"),
    KeyRule(r"final_conv\.1\.bias", r"b4.conv.bias"),
    KeyRule(r"final_linear\.0\.(weight|bias)", r"b4.fc.\1"),
    KeyRule(r"final_linear\.1\.(weight|bias)", r"b4.out.\1"),
)


# ------------------------------------------------------------------------------------------------------------
# Reading.
# ------------------------------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` allowing ``argparse.Namespace`` (the ``args`` entry) only."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p} does not exist or is not a file.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unpickling problem is a bad file for the user)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"{p} could not be read as a weights-only torch checkpoint ({first}). Only tensors and "
            "argparse.Namespace are allowed; nothing from the file is executed."
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(f"{p} holds a {type(data).__name__}, not a checkpoint dict.")
    return data


def is_rosinality_checkpoint(data: Any) -> bool:
    """A dict with a ``g_ema`` or ``g`` state dict holding rosinality's generator names, or a ``d`` one."""
    if not isinstance(data, dict):
        return False
    g = data.get("g_ema", data.get("g"))
    if isinstance(g, dict) and "input.input" in g and "conv1.conv.weight" in g:
        return True
    d = data.get("d")
    return isinstance(d, dict) and "final_linear.0.weight" in d and "convs.0.0.weight" in d


def _args(data: dict[str, Any]) -> dict[str, Any]:
    args = data.get("args")
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})


def _channel_multiplier(state: dict[str, torch.Tensor], size: int, args: dict[str, Any], key: str) -> int:
    """``args.channel_multiplier``, checked against (or, without args, read from) the stored widths."""
    cm = args.get("channel_multiplier")
    if size >= 64 and key in state:
        stored = int(state[key].shape[-4 if state[key].dim() == 5 else 0])  # out channels at 64 px
        found = stored * 64 // _ROS_CHANNEL_BASE
        if found * _ROS_CHANNEL_BASE // 64 != stored:
            raise ConversionError(f"{stored} channels at 64 px match no channel_multiplier of rosinality's code.")
        if cm is not None and int(cm) != found:
            raise ConversionError(f"args.channel_multiplier={cm} but the weights have channel_multiplier {found}.")
        return found
    return int(cm) if cm is not None else DEFAULT_CHANNEL_MULTIPLIER


def _g_block_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """rosinality's generator keys with block resolutions in them (``convs.2.x`` -> ``b16.conv0.x``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"style\.(\d+)\.(.*)", key):
            key = f"style.{int(m[1]) - 1}.{m[2]}"  # style.0 is the pixel norm
        elif m := re.fullmatch(r"(conv1|to_rgb1)\.(.*)", key):
            key = f"b4.{'conv1' if m[1] == 'conv1' else 'torgb'}.{m[2]}"
        elif m := re.fullmatch(r"convs\.(\d+)\.(.*)", key):
            i = int(m[1])
            key = f"b{8 * 2 ** (i // 2)}.conv{i % 2}.{m[2]}"
        elif m := re.fullmatch(r"to_rgbs\.(\d+)\.(.*)", key):
            key = f"b{8 * 2 ** int(m[1])}.torgb.{m[2]}"
        elif m := re.fullmatch(r"noises\.noise_(\d+)", key):
            j = int(m[1])
            key = "b4.conv1.noise_const" if j == 0 else f"b{4 * 2 ** ((j + 1) // 2)}.conv{(j + 1) % 2}.noise_const"
        out[key] = value
    return out


def _d_block_names(state: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """rosinality's discriminator keys with block resolutions (``convs.1.conv2.1.weight`` -> ``b{R}.conv1.1...``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"convs\.0\.(.*)", key):
            key = f"b{size}.fromrgb.{m[1]}"
        elif m := re.fullmatch(r"convs\.(\d+)\.(conv1|conv2|skip)\.(.*)", key):
            res = size // 2 ** (int(m[1]) - 1)
            key = f"b{res}.{ {'conv1': 'conv0', 'conv2': 'conv1', 'skip': 'skip'}[m[2]] }.{m[3]}"
        out[key] = value
    return out


def _generator(state: dict[str, torch.Tensor], args: dict[str, Any], latent_avg: Any) -> Network:
    from styleforge.models.stylegan2 import StyleGAN2Generator, StyleGAN2GeneratorConfig

    if "style.1.weight" not in state:
        raise ConversionError("The rosinality generator has no mapping layer style.1.")
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    style_dim = int(state["style.1.weight"].shape[1])
    size = 4 * 2 ** sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    if args.get("size") is not None and int(args["size"]) != size:
        raise ConversionError(f"args.size={args['size']} but the generator's layers make {size} px images.")
    cm = _channel_multiplier(state, size, args, "convs.6.conv.weight")
    standard = _STANDARD_KERNEL * _UP_GAIN
    kernels = [v for k, v in state.items() if k.endswith((".blur.kernel", ".upsample.kernel"))]
    stored = any(v.shape != standard.shape or not torch.allclose(v.float(), standard, atol=1e-6) for v in kernels)
    config = StyleGAN2GeneratorConfig(
        z_dim=style_dim, w_dim=style_dim, img_resolution=size, mapping_layers=n_mlp,
        channel_base=_ROS_CHANNEL_BASE * cm, channel_max=_ROS_CHANNEL_MAX, architecture="skip", conv_clamp=None,
        num_fp16_res=0, stored_filters=stored,
    )
    net = StyleGAN2Generator(config)
    renamed = _g_block_names(state)
    if isinstance(latent_avg, torch.Tensor):
        renamed["latent_avg"] = latent_avg.reshape(-1, style_dim)[0]
    else:
        renamed["latent_avg"] = net.mapping.w_avg.detach().clone()  # replaced below, after the weights load
    rules = (*GENERATOR_RULES, *_g_kernel_rules("load" if stored else "check"))
    remap_state_dict(renamed, rules, net, what="rosinality generator")
    if not isinstance(latent_avg, torch.Tensor):
        with torch.no_grad():
            z = torch.randn(W_AVG_SAMPLES, style_dim, generator=torch.Generator().manual_seed(W_AVG_SEED))
            net.mapping.w_avg.copy_(net.mapping(z, None, truncation_psi=1)[:, 0].mean(0))
    return net.eval()


def _discriminator(state: dict[str, torch.Tensor], args: dict[str, Any]) -> Network:
    from styleforge.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2DiscriminatorConfig

    blocks = sorted({int(m[1]) for k in state if (m := re.fullmatch(r"convs\.(\d+)\.conv1\..*", k))})
    size = 4 * 2 ** len(blocks)
    if args.get("size") is not None and int(args["size"]) != size:
        raise ConversionError(f"args.size={args['size']} but the discriminator's blocks take {size} px images.")
    block64 = int(math.log2(size // 64)) + 1 if size >= 64 else 0  # the residual block at 64 px
    cm = _channel_multiplier(state, size, args, f"convs.{block64}.conv1.0.weight")
    config = StyleGAN2DiscriminatorConfig(
        img_resolution=size, channel_base=_ROS_CHANNEL_BASE * cm, channel_max=_ROS_CHANNEL_MAX,
        architecture="resnet", conv_clamp=None, num_fp16_res=0, mbstd_group_size=_MBSTD_GROUP,
        mbstd_num_channels=_MBSTD_CHANNELS,
    )
    net = StyleGAN2Discriminator(config)
    remap_state_dict(_d_block_names(state, size), DISCRIMINATOR_RULES, net, what="rosinality discriminator")
    return net.eval()


def load_rosinality(path: str | os.PathLike, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a rosinality checkpoint: ``{"G": ..., "D": ..., "G_ema": ..., "args": dict}`` (absent networks ``None``).

    Args:
        path: the ``.pt`` file.
        data: its already-read content (:func:`read_checkpoint`), to avoid reading it twice.

    Raises:
        UserInputError: not a rosinality checkpoint, or a file ``torch.load(weights_only=True)`` refuses.
        ConversionError: the weights do not fit the network their sizes describe.
    """
    data = read_checkpoint(path) if data is None else data
    if not is_rosinality_checkpoint(data):
        raise UserInputError(
            f"{path} is a torch checkpoint but not a rosinality/stylegan2-pytorch one (expected 'g_ema', 'g' or "
            f"'d' state dicts with that project's layer names; found keys {sorted(map(str, data))[:8]})."
        )
    args = _args(data)
    latent_avg = data.get("latent_avg")
    out: dict[str, Any] = {"G": None, "D": None, "G_ema": None, "args": {k: _plain(v) for k, v in args.items()}}
    if isinstance(data.get("g_ema"), dict):
        out["G_ema"] = _generator(data["g_ema"], args, latent_avg)
    if isinstance(data.get("g"), dict):
        out["G"] = _generator(data["g"], args, latent_avg)
    if isinstance(data.get("d"), dict):
        out["D"] = _discriminator(data["d"], args)
    return out


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)


# ------------------------------------------------------------------------------------------------------------
# Writing.
# ------------------------------------------------------------------------------------------------------------


def _ros_channel_multiplier(res_channels: dict[int, int], what: str) -> int:
    """The ``channel_multiplier`` whose channel table equals ours at every resolution, else an error."""
    for cm in range(1, 33):
        want = {r: min(_ROS_CHANNEL_BASE * cm // r, _ROS_CHANNEL_MAX) for r in res_channels}
        if want == res_channels:
            return cm
    raise UserInputError(
        f"The {what} has channels {res_channels} per resolution; rosinality's code only builds 512 channels up to "
        "32 px and 16384 * channel_multiplier / res above (channel_base = 16384 * k, channel_max = 512)."
    )


def _check_compatible(cfg: Any, what: str, required: dict[str, Any]) -> None:
    bad = [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in required.items() if getattr(cfg, k) != v]
    if bad:
        raise UserInputError(f"The {what} cannot be written as a rosinality checkpoint: {', '.join(bad)}.")


def _filter_kernel(net: torch.nn.Module, gain: float) -> torch.Tensor:
    f = net.resample_filter.detach().cpu()
    return (f if f.dim() == 2 else torch.outer(f, f)) * gain


def generator_to_rosinality(G: Network) -> tuple[dict[str, torch.Tensor], int]:
    """Our StyleGAN2 generator's state in rosinality's names and layouts; also returns its channel multiplier."""
    from styleforge.models.stylegan2 import StyleGAN2Generator

    if not isinstance(G, StyleGAN2Generator):
        raise UserInputError(f"Only StyleGAN2 generators can be written for rosinality's code, not {type(G).__name__}.")
    cfg = G.config
    _check_compatible(cfg, "generator", {"architecture": "skip", "c_dim": 0, "img_channels": 3, "z_dim": cfg.w_dim,
                                         "mapping_layer_features": None, "mapping_lr_multiplier": 0.01,
                                         "resample_filter": (1, 3, 3, 1), "use_noise": True, "conv_clamp": None,
                                         "mapping_activation": "lrelu"})
    syn = G.synthesis
    res_channels = {r: int(getattr(syn, f"b{r}").conv1.weight.shape[0]) for r in syn.block_resolutions}
    cm = _ros_channel_multiplier(res_channels, "generator")
    out: dict[str, torch.Tensor] = {}
    sd = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    for i in range(cfg.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    noise_idx = 0
    for r in syn.block_resolutions:
        k = int(math.log2(r)) - 3  # index of the up-sampling block (r = 8 * 2**k)
        layers = [("conv1", "conv1")] if r == 4 else [("conv0", f"convs.{2 * k}"), ("conv1", f"convs.{2 * k + 1}")]
        for ours, theirs in layers:
            p = f"synthesis.b{r}.{ours}"
            out[f"{theirs}.conv.weight"] = sd[f"{p}.weight"][None]
            out[f"{theirs}.conv.modulation.weight"] = sd[f"{p}.affine.weight"]
            out[f"{theirs}.conv.modulation.bias"] = sd[f"{p}.affine.bias"]
            if ours == "conv0":
                out[f"{theirs}.conv.blur.kernel"] = _filter_kernel(getattr(syn, f"b{r}").conv0, _UP_GAIN)
            out[f"{theirs}.noise.weight"] = sd[f"{p}.noise_strength"].reshape(1)
            out[f"{theirs}.activate.bias"] = sd[f"{p}.bias"]
            out[f"noises.noise_{noise_idx}"] = sd[f"{p}.noise_const"][None, None]
            noise_idx += 1
        rgb = "to_rgb1" if r == 4 else f"to_rgbs.{k}"
        p = f"synthesis.b{r}.torgb"
        out[f"{rgb}.bias"] = sd[f"{p}.bias"].reshape(1, -1, 1, 1)
        if r > 4:
            out[f"{rgb}.upsample.kernel"] = _filter_kernel(getattr(syn, f"b{r}"), _UP_GAIN)
        out[f"{rgb}.conv.weight"] = sd[f"{p}.weight"][None]
        out[f"{rgb}.conv.modulation.weight"] = sd[f"{p}.affine.weight"]
        out[f"{rgb}.conv.modulation.bias"] = sd[f"{p}.affine.bias"]
    return out, cm


def discriminator_to_rosinality(D: Network) -> tuple[dict[str, torch.Tensor], int]:
    """Our StyleGAN2 ``resnet`` discriminator's state in rosinality's names; also returns its channel multiplier."""
    from styleforge.models.stylegan2 import StyleGAN2Discriminator

    if not isinstance(D, StyleGAN2Discriminator):
        raise UserInputError(f"Only StyleGAN2 discriminators can be written for rosinality, not {type(D).__name__}.")
    cfg = D.config
    _check_compatible(cfg, "discriminator", {"architecture": "resnet", "c_dim": 0, "img_channels": 3,
                                             "resample_filter": (1, 3, 3, 1), "conv_clamp": None,
                                             "mbstd_group_size": _MBSTD_GROUP,
                                             "mbstd_num_channels": _MBSTD_CHANNELS, "activation": "lrelu"})
    sd = {k: v.detach().cpu() for k, v in D.state_dict().items()}
    R = cfg.img_resolution
    res_list = [R // 2**i for i in range(int(math.log2(R)) - 1)]  # R ... 4
    res_channels = {r: int(sd[f"b{r}.conv0.weight"].shape[0]) for r in res_list if r > 4}
    res_channels[4] = int(sd["b4.conv.weight"].shape[0])
    cm = _ros_channel_multiplier(res_channels, "discriminator")
    out = {"convs.0.0.weight": sd[f"b{R}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{R}.fromrgb.bias"]}
    for i, r in enumerate(res_list[:-1], start=1):
        block = getattr(D, f"b{r}")
        out[f"convs.{i}.conv1.0.weight"] = sd[f"b{r}.conv0.weight"]
        out[f"convs.{i}.conv1.1.bias"] = sd[f"b{r}.conv0.bias"]
        out[f"convs.{i}.conv2.0.kernel"] = _filter_kernel(block.conv1, 1.0)
        out[f"convs.{i}.conv2.1.weight"] = sd[f"b{r}.conv1.weight"]
        out[f"convs.{i}.conv2.2.bias"] = sd[f"b{r}.conv1.bias"]
        out[f"convs.{i}.skip.0.kernel"] = _filter_kernel(block.skip, 1.0)
        out[f"convs.{i}.skip.1.weight"] = sd[f"b{r}.skip.weight"]
    out.update({"final_conv.0.weight": sd["b4.conv.weight"], "final_conv.1.bias": sd["b4.conv.bias"],
                "final_linear.0.weight": sd["b4.fc.weight"], "final_linear.0.bias": sd["b4.fc.bias"],
                "final_linear.1.weight": sd["b4.out.weight"], "final_linear.1.bias": sd["b4.out.bias"]})
    return out, cm


def save_rosinality(path: str | os.PathLike, G: Network | None = None, D: Network | None = None,
                    G_ema: Network | None = None) -> Path:
    """Write networks as a rosinality/stylegan2-pytorch checkpoint (``g``, ``d``, ``g_ema``, ``args``), atomically.

    That project's ``Generator(size, latent, n_mlp, channel_multiplier)`` loads ``g_ema`` with ``strict=True``.
    Its generator has no ``w_avg``; ours is kept under ``latent_avg`` (read back by :func:`load_rosinality`).
    """
    if G is None and G_ema is None and D is None:
        raise UserInputError("save_rosinality() needs at least one of G, D, G_ema.")
    ckpt: dict[str, Any] = {}
    multipliers = set()
    gen = G_ema if G_ema is not None else G
    for key, net in (("g_ema", G_ema), ("g", G)):
        if net is not None:
            ckpt[key], cm = generator_to_rosinality(net)
            multipliers.add(cm)
    if D is not None:
        ckpt["d"], cm = discriminator_to_rosinality(D)
        multipliers.add(cm)
    if len(multipliers) != 1:
        raise UserInputError(f"The networks have different channel multipliers {sorted(multipliers)}.")
    size = (gen or D).config.img_resolution
    args = argparse.Namespace(size=size, channel_multiplier=multipliers.pop())
    if gen is not None:
        args.latent, args.n_mlp = gen.config.w_dim, gen.config.mapping_layers
        ckpt["latent_avg"] = gen.mapping.w_avg.detach().cpu().clone()
    ckpt["args"] = args
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
