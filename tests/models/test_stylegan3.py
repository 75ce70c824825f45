"""StyleGAN3 generators: shared battery on the tiny presets, layer schedule, input transform, buffers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import styleforge
from styleforge.models.stylegan3 import (
    StyleGAN3Config,
    StyleGAN3Generator,
    StyleGAN3Synthesis,
    layer_schedule,
)
from styleforge.ops.modulated_conv import modulated_conv2d_stylegan3
from styleforge.ops.transforms import (
    rotation_matrix,
    transform_matrix,
    translation_matrix,
    user_transform_matrix,
)
from styleforge.utils.errors import UserInputError
from tests.models.common import GENERATOR_CHECKS, make_latents

TINY_PRESETS = ("stylegan3-t-tiny", "stylegan3-r-tiny")


@pytest.mark.parametrize("preset", TINY_PRESETS)
@pytest.mark.parametrize("check", sorted(GENERATOR_CHECKS))
def test_generator_battery(preset, check, tmp_path):
    GENERATOR_CHECKS[check](lambda: styleforge.create_model(preset), tmp_dir=tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Layer schedule.

# Layer names of the official 1024 px StyleGAN3-T and -R generators (size = s + 20 px margin, channels
# from f_c).
OFFICIAL_1024_T = [
    "L0_36_512",
    "L1_36_512",
    "L2_52_512",
    "L3_52_512",
    "L4_84_512",
    "L5_148_512",
    "L6_148_512",
    "L7_276_323",
    "L8_276_203",
    "L9_532_128",
    "L10_1044_81",
    "L11_1044_51",
    "L12_1044_32",
    "L13_1024_32",
    "L14_1024_3",
]
OFFICIAL_1024_R = [
    "L0_36_1024",
    "L1_36_1024",
    "L2_52_1024",
    "L3_52_1024",
    "L4_84_1024",
    "L5_148_1024",
    "L6_148_1024",
    "L7_276_645",
    "L8_276_406",
    "L9_532_256",
    "L10_1044_161",
    "L11_1044_102",
    "L12_1044_32",
    "L13_1024_64",
    "L14_1024_3",
]


def _names(base: int, cmax: int, res: int = 1024) -> list[str]:
    s = layer_schedule(res, 3, base, cmax)
    return [f"L{i}_{int(s.sizes[i])}_{int(s.channels[i])}" for i in range(15)]


def test_schedule_matches_official_layer_names():
    assert _names(32768, 512) == OFFICIAL_1024_T
    r = _names(65536, 1024)
    assert r[:12] == OFFICIAL_1024_R[:12] and r[13:] == OFFICIAL_1024_R[13:]
    assert r[12] == "L12_1044_64"  # channel_base / 2 / f_c = 32768 / 512


def test_schedule_paper_values():
    s = layer_schedule(256, 3, 32768, 512)
    # f_c grows geometrically from 2 to 128 over the first N - N_crit = 12 layers, then stays at s / 2.
    np.testing.assert_allclose(s.cutoffs[0], 2.0)
    np.testing.assert_allclose(s.cutoffs[12:], 128.0)
    ratios = s.cutoffs[1:13] / s.cutoffs[:12]
    np.testing.assert_allclose(ratios, ratios[0])
    np.testing.assert_allclose(s.stopbands[0], 2**2.1)
    np.testing.assert_allclose(s.stopbands[-1], 128 * 2**0.3)
    # s is a power of two >= 2 f_t (capped at the resolution); f_h = max(f_t, s/2) - f_c
    assert all(2 ** round(math.log2(v)) == v for v in s.sampling_rates)
    assert np.all(s.sampling_rates >= np.minimum(2 * s.stopbands, 256) - 1e-9)
    np.testing.assert_allclose(s.half_widths, np.maximum(s.stopbands, s.sampling_rates / 2) - s.cutoffs)
    # critically sampled last layers: f_c = s / 2
    np.testing.assert_allclose(s.cutoffs[-3:], s.sampling_rates[-3:] / 2)
    assert list(s.sizes[-2:]) == [256, 256] and s.sizes[0] == 16 + 20


# ------------------------------------------------------------------------------------------------------------
# Structure, buffers, configs.


def test_presets_structure():
    t = styleforge.create_model(
        "stylegan3-t", img_resolution=64, z_dim=8, w_dim=8, channel_base=256, channel_max=8
    )
    assert t.num_ws == 16 and len(t.synthesis.layers) == 15
    assert t.synthesis.layers[0].weight.shape[-1] == 3 and t.synthesis.layers[-1].weight.shape[-1] == 1
    preset_t = styleforge.models.registry.get_preset("stylegan3-t")
    preset_r = styleforge.models.registry.get_preset("stylegan3-r")
    assert preset_t.G_config.img_resolution == 256
    assert (preset_t.G_config.channel_base, preset_t.G_config.channel_max) == (32768, 512)
    assert (preset_r.G_config.channel_base, preset_r.G_config.channel_max) == (65536, 1024)
    assert preset_r.G_config.conv_kernel == 1 and preset_r.G_config.use_radial_filters
    assert type(styleforge.create_model("stylegan3-t-tiny", net="D")).__name__ == "StyleGAN2Discriminator"
    r = styleforge.create_model("stylegan3-r-tiny")
    layers = r.synthesis.layers
    assert all(layer.weight.shape[-1] == 1 for layer in layers)
    # radial (2-D) down filters except in the critically sampled layers and ToRGB
    for i, layer in enumerate(layers[:-1]):
        critical = i >= r.config.num_layers - r.config.num_critical
        assert layer.down_filter.ndim == (1 if critical else 2), i
        assert layer.up_filter.ndim == 1
        torch.testing.assert_close(layer.down_filter.sum(), torch.tensor(1.0))
    assert layers[-1].up_filter is None and layers[-1].down_filter is None


def test_persistent_and_derived_buffers():
    G = styleforge.create_model("stylegan3-t-tiny")
    keys = set(G.state_dict())
    assert {
        "synthesis.input.freqs",
        "synthesis.input.phases",
        "synthesis.input.transform",
        "mapping.w_avg",
    } <= keys
    assert all(f"synthesis.layers.{i}.magnitude_ema" in keys for i in range(len(G.synthesis.layers)))
    assert not any(k.endswith(("up_filter", "down_filter")) for k in keys)
    # frequencies lie inside the disc of radius f_c[0]
    radii = G.synthesis.input.freqs.norm(dim=1)
    assert radii.max() <= G.synthesis.input.bandwidth + 1e-6


def test_config_errors():
    with pytest.raises(UserInputError, match="power of two"):
        StyleGAN3Config(img_resolution=48)
    with pytest.raises(UserInputError, match="power of two"):
        styleforge.create_model("stylegan3-t-tiny", img_resolution=8)
    G = styleforge.create_model("stylegan3-t-tiny")
    with pytest.raises(UserInputError, match=r"ws of shape \[N, 8, 32\]"):
        G.synthesis(torch.zeros(2, 7, 32))
    with pytest.raises(UserInputError, match="transform"):
        G.synthesis(torch.zeros(2, 8, 32), transform=torch.eye(2))
    with pytest.raises(UserInputError, match="one matrix per sample"):
        G.synthesis(torch.zeros(2, 8, 32), transform=torch.eye(3).repeat(3, 1, 1))
    assert styleforge.transform_matrix is transform_matrix  # top-level re-export


def test_update_emas_moves_magnitude_ema():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-t-tiny")
    z, c = make_latents(G)
    before = [layer.magnitude_ema.clone() for layer in G.synthesis.layers]
    with torch.no_grad():
        G(z, c)
        assert all(
            torch.equal(b, layer.magnitude_ema) for b, layer in zip(before, G.synthesis.layers, strict=True)
        )
        G(z, c, update_emas=True)
    beta = G.config.magnitude_ema_beta
    # EMA of E[x^2] with decay beta starting from 1: the first layer's input is the Fourier features
    x0 = G.synthesis.input(G.mapping(z, c)[:, 0])
    expected = x0.square().mean().lerp(torch.tensor(1.0), beta)
    torch.testing.assert_close(G.synthesis.layers[0].magnitude_ema, expected.detach())
    assert all(
        not torch.equal(b, layer.magnitude_ema) for b, layer in zip(before, G.synthesis.layers, strict=True)
    )


def test_modulated_conv_matches_explicit_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    s = torch.randn(2, 3)
    gain = torch.tensor(0.7)
    y = modulated_conv2d_stylegan3(x, w, s, demodulate=True, padding=1, input_gain=gain)
    for n in range(2):
        wn = w * s[n].reshape(1, 3, 1, 1)
        wn = wn / wn.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
        ref = torch.nn.functional.conv2d(x[n : n + 1] * gain, wn, padding=1)
        torch.testing.assert_close(y[n : n + 1], ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Input transform.


def test_transform_matrix_is_inverse_of_user_matrix():
    m = transform_matrix(translate=(0.25, -0.125), rotate=40.0)
    assert m.dtype == torch.float32 and m.shape == (3, 3)
    u = torch.from_numpy(user_transform_matrix((0.25, -0.125), 40.0)).float()
    torch.testing.assert_close(m @ u, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(transform_matrix(), torch.eye(3))
    # a pure translation is inverted by negating it; a pure rotation by transposing it
    torch.testing.assert_close(transform_matrix(translate=(0.3, 0.1)), translation_matrix(-0.3, -0.1))
    torch.testing.assert_close(
        transform_matrix(rotate=30), rotation_matrix(math.radians(30)).T, atol=1e-6, rtol=0
    )
    with pytest.raises(UserInputError, match="translate"):
        transform_matrix(translate=(1.0,))


def test_transform_argument_equals_buffer_and_leaves_it_alone():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-t-tiny").eval()
    z, c = make_latents(G)
    m = transform_matrix((0.1, 0.2), 15)
    with torch.no_grad():
        plain = G(z, c)
        by_arg = G(z, c, transform=m)
        assert torch.equal(G.synthesis.input.transform, torch.eye(3))
        G.synthesis.input.transform.copy_(m)
        by_buffer = G(z, c)
        # the argument wins over the buffer
        identity = G(z, c, transform=torch.eye(3))
    assert not torch.allclose(plain, by_arg, atol=1e-3)
    torch.testing.assert_close(by_arg, by_buffer, rtol=0, atol=0)
    torch.testing.assert_close(identity, plain, rtol=0, atol=0)


def test_batched_transform_equals_per_sample():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-r-tiny").eval()
    z, c = make_latents(G, batch=2)
    ms = torch.stack([transform_matrix((0.1, 0.0), 0), transform_matrix((0.0, 0.0), 90)])
    with torch.no_grad():
        ws = G.mapping(z, c)
        both = G.synthesis(ws, transform=ms)
        one = torch.cat([G.synthesis(ws[i : i + 1], transform=ms[i]) for i in range(2)])
    # the style normalisation of the modulated conv is over the batch; it cancels up to rounding
    torch.testing.assert_close(both, one, rtol=1e-4, atol=1e-5)


def test_rotation_by_90_degrees_rotates_the_image():
    """A 90 degree input rotation of StyleGAN3-R gives (approximately) the image rotated by 90 degrees."""
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-r-tiny").eval()
    z, c = make_latents(G, batch=2)
    with torch.no_grad():
        img = G(z, c)
        rot = G(z, c, transform=transform_matrix(rotate=90))
    # A rotation by 90 degrees is rot90 one way or the other (depending on the axis conventions); the right
    # one must fit far better than no rotation at all.
    candidates = [torch.rot90(img, k, dims=(2, 3)) for k in (1, 3)]
    errs = [float((cand - rot).square().mean()) for cand in candidates]
    err_none = float((img - rot).square().mean())
    assert min(errs) < 0.25 * err_none, (errs, err_none)


def test_structure_helpers():
    s = StyleGAN3Synthesis(
        StyleGAN3Config(**{**styleforge.models.registry.get_preset("stylegan3-t-tiny").G_config.__dict__})
    )
    assert s.official_layer_name(0).startswith("L0_")
    assert isinstance(styleforge.create_model("stylegan3-t-tiny"), StyleGAN3Generator)


# ------------------------------------------------------------------------------------------------------------
# Conversion from official-format stubs built inside the test (no reference files needed).


def _stub(cls_name, params=None, buffers=None, modules=None, attrs=None, init_kwargs=None):
    from styleforge.convert.safe_pickle import ModuleStub, PersistentObject

    state = {
        "_parameters": dict(params or {}),
        "_buffers": dict(buffers or {}),
        "_modules": dict(modules or {}),
        "_non_persistent_buffers_set": set(),
        **(attrs or {}),
    }
    if init_kwargs is None:
        return ModuleStub(cls_name, state)
    return PersistentObject(cls_name, 4, (), init_kwargs, state)


def _linear_stub(layer):
    return _stub(
        "FullyConnectedLayer", {"weight": layer.weight.detach(), "bias": layer.bias.detach()}, init_kwargs={}
    )


def _official_stub(G: StyleGAN3Generator, extra_kwargs=None):
    """An official-format pickle stub of ``G``: official module names, official constructor kwargs."""
    cfg = G.config
    syn = G.synthesis
    inp = syn.input
    modules = {
        "input": _stub(
            "SynthesisInput",
            {"weight": inp.weight.detach()},
            {k: getattr(inp, k) for k in ("transform", "freqs", "phases")},
            {"affine": _linear_stub(inp.affine)},
            init_kwargs={},
        )
    }
    for i, layer in enumerate(syn.layers):
        attrs = {a: getattr(layer, a) for a in ("in_channels", "out_channels", "up_factor", "down_factor")}
        attrs.update(in_cutoff=np.float64(layer.in_cutoff), padding=list(layer.padding))
        modules[syn.official_layer_name(i)] = _stub(
            "SynthesisLayer",
            {"weight": layer.weight.detach(), "bias": layer.bias.detach()},
            {
                "magnitude_ema": layer.magnitude_ema,
                "up_filter": layer.up_filter,
                "down_filter": layer.down_filter,
            },
            {"affine": _linear_stub(layer.affine)},
            attrs,
            init_kwargs={},
        )
    mapping_modules = {
        f"fc{i}": _linear_stub(getattr(G.mapping, f"fc{i}")) for i in range(cfg.mapping_layers)
    }
    if cfg.c_dim:
        mapping_modules["embed"] = _linear_stub(G.mapping.embed)
    kwargs = dict(
        z_dim=cfg.z_dim,
        c_dim=cfg.c_dim,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs={"num_layers": cfg.mapping_layers},
        channel_base=cfg.channel_base,
        channel_max=cfg.channel_max,
        num_layers=cfg.num_layers,
        conv_kernel=cfg.conv_kernel,
        use_radial_filters=cfg.use_radial_filters,
        magnitude_ema_beta=cfg.magnitude_ema_beta,
        **(extra_kwargs or {}),
    )
    return _stub(
        "Generator",
        modules={
            "synthesis": _stub("SynthesisNetwork", modules=modules, init_kwargs={}),
            "mapping": _stub(
                "MappingNetwork", buffers={"w_avg": G.mapping.w_avg}, modules=mapping_modules, init_kwargs={}
            ),
        },
        init_kwargs=kwargs,
    )


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_convert_official_stub_roundtrip(preset):
    from styleforge.convert.official import convert_network

    torch.manual_seed(0)
    G = styleforge.create_model(preset, c_dim=3)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
        for layer in G.synthesis.layers:
            layer.magnitude_ema.fill_(0.7)
    converted = convert_network(_official_stub(G))
    assert isinstance(converted, StyleGAN3Generator) and converted.config == G.config
    z, c = make_latents(G)
    m = transform_matrix((0.1, 0.05), 20)
    with torch.no_grad():
        torch.testing.assert_close(
            converted(z, c, truncation_psi=0.7, transform=m), G(z, c, 0.7, transform=m)
        )


def test_convert_rejects_mismatches():
    from styleforge.convert.official import ConversionError, convert_network
    from styleforge.convert.official_stylegan3 import can_convert_generator

    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-t-tiny")
    # a fork with a different filter design: the stored filter differs from the one the config gives
    stub = _official_stub(G)
    layer_stub = stub.get_submodule("synthesis").get_submodule(G.synthesis.official_layer_name(1))
    layer_stub.state["_buffers"]["up_filter"] = layer_stub.state["_buffers"]["up_filter"].flip(0) * 1.1
    with pytest.raises(ConversionError, match="up_filter"):
        convert_network(stub)
    # StyleGAN-XL-like options are left to another converter
    assert not can_convert_generator(_official_stub(G, {"some_xl_option": 1}))
    # a StyleGAN2 generator (constant input, no Fourier features) is not claimed
    sg2 = _official_stub(G)
    del sg2.get_submodule("synthesis").get_submodule("input").state["_buffers"]["freqs"]
    assert not can_convert_generator(sg2)
